"""A chute for the gateway's tests: echo, a slow call, a stream. ``GW_TEST_CONCURRENCY`` sets its concurrency."""

import asyncio
import os
from collections.abc import AsyncIterator

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="alice",
    name="gwtest",
    image="python:3.11",
    node_selector=NodeSelector(gpu_count=1),
    concurrency=int(os.environ.get("GW_TEST_CONCURRENCY", "8")),
)


@chute.cord(public_api_path="/echo")
async def echo(self: Chute, text: str = "", n: int = 0) -> dict[str, object]:
    return {"text": text, "n": n, "pid": os.getpid()}


@chute.cord(public_api_path="/sleep")
async def sleep(self: Chute, seconds: float = 0.5, n: int = 0) -> dict[str, object]:
    await asyncio.sleep(seconds)
    return {"slept": seconds, "n": n, "pid": os.getpid()}


@chute.cord(public_api_path="/stream")
async def stream(self: Chute, frames: int = 5, delay: float = 0.2) -> AsyncIterator[dict[str, int]]:
    for i in range(frames):
        yield {"i": i}
        await asyncio.sleep(delay)
