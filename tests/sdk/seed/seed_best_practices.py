# "Best Practices" 1, 2 and 4: resource management, error handling, performance.
# Adapted: load_model and logger are left undefined by the document.
import logging

from fastapi import HTTPException

from chutes.chute import Chute, NodeSelector

logger = logging.getLogger(__name__)


def load_model():
    raise NotImplementedError("stands in for a model download")


chute = Chute(
    username="myuser",
    name="my-ai-app",
    image="nvidia/cuda:12.2-runtime-ubuntu22.04",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),
    concurrency=4,
)


@chute.on_startup()
async def initialize(self):
    # Pre-load models and resources
    self.model = load_model()  # Do this once, not per request


@chute.on_shutdown()
async def cleanup(self):
    # Clean up resources
    if hasattr(self, "model"):
        del self.model


@chute.cord(public_api_path="/predict")
async def predict(self, text: str) -> dict:
    try:
        result = await self.model.predict(text)
        return {"result": result}
    except Exception as e:
        # Log the error and return a user-friendly message
        logger.error(f"Prediction failed: {e}")
        raise HTTPException(status_code=500, detail="Prediction failed")  # noqa: B904 - as in the document


@chute.on_startup()
async def optimize(self):
    import torch

    # Optimize for inference
    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = True

    # Pre-compile models if possible
    self.model = torch.jit.script(self.model)
