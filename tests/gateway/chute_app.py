"""A chute for the gateway's tests: echo, a slow call, a stream, a cancellable call, a blocking sync call.

``GW_TEST_CONCURRENCY`` sets its concurrency; ``GW_TEST_MARKS`` is where cancelled calls leave marks.
"""

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

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


@chute.cord(public_api_path="/cancellable")
async def cancellable(self: Chute, seconds: float = 30.0, tag: str = "") -> dict[str, object]:
    """Sleeps; when cancelled (its client left) it leaves a mark in ``$GW_TEST_MARKS`` for the test to see."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        marks = os.environ.get("GW_TEST_MARKS")
        if marks and tag.isalnum():
            Path(marks, f"cancelled-{tag}").write_text("cancelled")
        raise
    return {"slept": seconds}


@chute.cord(public_api_path="/block")
def block(self: Chute, seconds: float = 2.0) -> dict[str, object]:
    """A sync cord: it blocks its thread, which nothing can interrupt."""
    time.sleep(seconds)
    return {"blocked": seconds}
