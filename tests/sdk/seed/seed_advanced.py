# "Advanced Usage": context kept on the chute, FastAPI features, environment variables.
# Adapted: expensive_computation and validate_api_key are left undefined by the document.
import os

from fastapi import Depends, HTTPException

from chutes.chute import Chute, NodeSelector


async def expensive_computation(text: str) -> dict:
    return {"length": len(text)}


def validate_api_key() -> str:
    return "key"


def process_data(data: str) -> str:
    return data


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


@chute.on_startup()
async def configure(self):
    self.debug_mode = os.getenv("DEBUG", "false").lower() == "true"
    self.model_path = os.getenv("MODEL_PATH", "/app/models/default")
