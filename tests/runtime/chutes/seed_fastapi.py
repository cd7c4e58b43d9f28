# The seed's "Integration with FastAPI Features", "Input Validation" and "Custom Context Management" examples,
# their cord bodies unchanged. What the document leaves undefined is defined here: validate_api_key reads an
# X-App-Key header (FastAPI's Header; Authorization and X-API-Key carry the platform's own key, which the gateway
# consumes and never forwards), process_data and expensive_computation are trivial, and self.model is a stand-in
# set by a startup hook.
from fastapi import Depends, Header, HTTPException
from pydantic import BaseModel, Field

from chutes.chute import Chute, NodeSelector

API_KEY = "seed-secret-key"


def validate_api_key(x_app_key: str | None = Header(None)) -> str | None:
    return x_app_key if x_app_key == API_KEY else None


def process_data(data: str) -> str:
    return data.upper()


async def expensive_computation(text: str) -> dict:
    return {"length": len(text)}


class StandInModel:
    async def generate(self, text: str, temperature: float) -> dict:
        return {"generated": text[::-1], "temperature": temperature}


chute = Chute(
    username="myuser",
    name="my-ai-app",
    image="nvidia/cuda:12.2-runtime-ubuntu22.04",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),
    concurrency=4,
)


@chute.on_startup()
async def setup(self):
    # This data persists for the lifetime of the chute instance
    self.cache = {}
    self.request_count = 0
    self.model = StandInModel()


@chute.cord(public_api_path="/cached-predict")
async def cached_predict(self, text: str) -> dict:
    # Access persistent data
    self.request_count += 1

    if text in self.cache:
        return self.cache[text]

    result = await expensive_computation(text)
    self.cache[text] = result
    return result


@chute.cord(public_api_path="/secure-endpoint")
async def secure_endpoint(self, data: str, api_key: str = Depends(validate_api_key)):
    if not api_key:
        raise HTTPException(status_code=401, detail="Invalid API key")
    return {"secure_data": process_data(data)}


class PredictionInput(BaseModel):
    text: str = Field(..., min_length=1, max_length=1000)
    temperature: float = Field(0.7, ge=0.0, le=2.0)


@chute.cord(input_schema=PredictionInput)
async def predict(self, data: PredictionInput) -> dict:
    # Input is automatically validated
    return await self.model.generate(data.text, temperature=data.temperature)
