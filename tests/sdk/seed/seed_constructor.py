# "Chute Constructor Parameters" and "Chute Methods", assembled into one chute.
# Adapted: MyInputSchema, load_my_model and setup_preprocessing are left undefined by the document.
from pydantic import BaseModel

from chutes.chute import Chute, NodeSelector
from chutes.image import Image


class MyInputSchema(BaseModel):
    text: str


def load_my_model():
    raise NotImplementedError("stands in for a model download")


def setup_preprocessing():
    return None


chute = Chute(
    username="myuser",
    name="my-awesome-app",
    image="nvidia/cuda:12.2-runtime-ubuntu22.04",
    tagline="Fast text generation with custom models",
    readme="""
    # My AI Application

    This chute provides text generation capabilities using a fine-tuned model.

    ## Usage
    ```bash
    curl -X POST https://myuser-myapp.chutes.ai/generate \\
         -d '{"prompt": "Hello world"}'
    ```

    ## Features
    - Fast inference
    - Streaming support
    - Custom fine-tuning
    """,
    node_selector=NodeSelector(
        gpu_count=2,
        min_vram_gb_per_gpu=24,
        include=["a100", "h100"],  # Preferred GPU types
        exclude=["k80", "p100"],  # Avoid older GPUs
    ),
    concurrency=8,
    revision="v1.2.0",
)

# The other ways to give an image.
custom_image = Image(username="myuser", name="my-image", tag="1.0")
chute_with_custom_image = Chute(username="myuser", name="my-image-app", image=custom_image)
chute_with_template_image = Chute(username="myuser", name="my-vllm-app", image="chutes/vllm:latest")


@chute.on_startup()
async def load_model(self):
    # This runs once when the chute starts
    self.model = load_my_model()
    self.preprocessor = setup_preprocessing()


@chute.on_shutdown()
async def cleanup(self):
    # This runs when the chute is shutting down
    if hasattr(self, "database"):
        await self.database.close()


@chute.cord(
    public_api_path="/predict",
    method="POST",
    input_schema=MyInputSchema,
    output_content_type="application/json",
)
async def predict(self, data: MyInputSchema) -> dict:
    return {"result": "prediction"}
