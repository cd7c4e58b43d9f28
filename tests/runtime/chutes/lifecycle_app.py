"""A chute for process-level tests: a slow cord (drain on SIGTERM) and hooks that leave marks in files."""

import asyncio
import os
import tempfile
from pathlib import Path

from chutes.chute import Chute

chute = Chute(username="tests", name="lifecycle", image="python:3.12", concurrency=4)
# Marks go to a throw-away folder unless a test asks for them, never into the working directory.
MARKS = Path(os.environ.get("MARKS_DIR") or tempfile.mkdtemp(prefix="chutes-marks-"))


@chute.on_startup()
async def boot(self: Chute) -> None:
    if os.environ.get("FAIL_STARTUP"):
        raise RuntimeError("cannot load the model: weights missing")
    await asyncio.sleep(float(os.environ.get("STARTUP_DELAY", "0")))


@chute.on_shutdown()
def bye(self: Chute) -> None:
    (MARKS / "shutdown-hook-ran").write_text("yes")


@chute.cord(public_api_path="/sleep")
async def sleep(self: Chute, seconds: float = 2.0) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}
