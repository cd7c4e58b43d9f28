"""hello: the smallest useful chute. CPU only: its code needs no GPU, its NodeSelector still names GPUs.

chutes inspect examples/hello.py:chute
chutes build examples/hello.py:chute --dockerfile-only
"""

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Annotated

from pydantic import Field

from chutes.chute import Chute, NodeSelector
from chutes.image import Image

image = (
    Image(username="demo", name="hello", tag="0.1")
    .from_base("python:3.12-slim")
    .with_env("PYTHONUNBUFFERED", "1")
    .run_command("pip install --no-cache-dir 'pydantic>=2.7'")
)

chute = Chute(
    username="demo",
    name="hello",
    image=image,
    tagline="Greets you, and counts for you",
    readme='# hello\n\n`POST /hello {"name": "Ada"}` → a greeting; `POST /count {"to": 3}` → a stream.',
    # Any one GPU with 16 GB or more: the cheapest that is free wins, so it also runs on a real GPU box.
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),
    concurrency=4,
)


@chute.on_startup()
async def setup(self: Chute) -> None:
    # State set here lives as long as the instance.
    self.greeting = os.environ.get("HELLO_GREETING", "Hello")
    self.calls = 0


@chute.cord(public_api_path="/hello")
async def hello(self: Chute, name: Annotated[str, Field(min_length=1, max_length=100)] = "world") -> dict[str, object]:
    """A JSON answer."""
    self.calls += 1
    return {"greeting": f"{self.greeting}, {name}!", "calls": self.calls, "pid": os.getpid()}


@chute.cord(public_api_path="/count")
async def count(
    self: Chute, to: Annotated[int, Field(ge=1, le=1000)] = 5, delay: Annotated[float, Field(ge=0, le=1)] = 0.05
) -> AsyncIterator[dict[str, int]]:
    """A stream (an async generator): one event per number."""
    for n in range(1, to + 1):
        yield {"n": n}
        await asyncio.sleep(delay)
