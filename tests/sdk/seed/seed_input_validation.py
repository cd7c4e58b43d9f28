# "Best Practices" 3: input validation with a pydantic input_schema.
from pydantic import BaseModel, Field

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="myuser",
    name="my-ai-app",
    image="nvidia/cuda:12.2-runtime-ubuntu22.04",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),
    concurrency=4,
)


class PredictionInput(BaseModel):
    text: str = Field(..., min_length=1, max_length=1000)
    temperature: float = Field(0.7, ge=0.0, le=2.0)


@chute.cord(input_schema=PredictionInput)
async def predict(self, data: PredictionInput) -> dict:
    # Input is automatically validated
    return await self.model.generate(data.text, temperature=data.temperature)
