"""A chute with jobs, for job-runner tests."""

import json
from pathlib import Path

from pydantic import BaseModel

from chutes.chute import Chute

chute = Chute(username="tests", name="jobs", image="python:3.12")


class Config(BaseModel):
    epochs: int


@chute.job(timeout=60)
async def train(self: Chute, epochs: int, output_dir: str) -> dict[str, int]:
    Path(output_dir, "model.txt").write_text(f"trained for {epochs} epochs\n")
    sub = Path(output_dir, "logs")
    sub.mkdir()
    (sub / "epochs.json").write_text(json.dumps(list(range(epochs))))
    return {"loss_x1000": 1000 // (epochs + 1)}


@chute.job(timeout=60, upload=False)
def crunch(self: Chute, config: Config) -> None:
    if config.epochs < 0:
        raise ValueError("epochs must not be negative")


@chute.job(timeout=30)
async def hang(self: Chute) -> None:
    import asyncio

    await asyncio.sleep(3600)


@chute.job(timeout=60)
def export(self: Chute, **job_data):  # type: ignore[no-untyped-def]  # written as in Chutes' own examples
    import tempfile

    out = Path(job_data["output_dir"])
    (out / "export.csv").write_text(f"rows,{job_data.get('rows', 0)}\n")
    with tempfile.NamedTemporaryFile("w", suffix=".tmp", delete=False) as scratch:
        scratch.write("a temporary file lands in TMPDIR, the output folder")
    return {"keys": sorted(job_data), "scratch_in_outputs": Path(scratch.name).parent == out}
