"""Jobs run locally: outputs, status.json, failures, timeouts, and ``chutes run --job`` on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chutes.chute import Chute
from chutes.runtime.config import ConfigError
from chutes.runtime.jobs import OUTPUT_DIR_ENV, find_job, run_job
from tests.runtime.support import REPO, runtime_env

pytestmark = pytest.mark.timeout(60)


def _status(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "status.json").read_text()))


@pytest.fixture
def chute() -> Chute:
    chute = Chute(username="tests", name="local-jobs", image="python:3.12")
    events: list[str] = []
    chute.events = events  # type: ignore[attr-defined]

    @chute.on_startup()
    def boot(self: Chute) -> None:
        events.append("startup")

    @chute.on_shutdown()
    async def bye(self: Chute) -> None:
        events.append("shutdown")

    @chute.job(timeout=60)
    async def render(self: Chute, frames: int, output_dir: str) -> list[int]:
        events.append("job")
        for n in range(frames):
            Path(output_dir, f"frame-{n}.txt").write_text(str(n))
        return list(range(frames))

    @chute.job(timeout=60)
    def from_env(self: Chute) -> None:
        import os

        Path(os.environ[OUTPUT_DIR_ENV], "note.txt").write_text("found it")

    @chute.job(timeout=60)
    async def broken(self: Chute) -> None:
        raise RuntimeError("out of GPU memory")

    @chute.job(timeout=30)
    async def forever(self: Chute) -> None:
        import asyncio

        await asyncio.sleep(3600)

    return chute


def test_job_writes_outputs_result_and_status(chute: Chute, tmp_path: Path) -> None:
    outcome = run_job(chute, find_job(chute, "render"), {"frames": 2}, tmp_path / "out")
    assert outcome.ok
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["frame-0.txt", "frame-1.txt", "result.json", "status.json"]
    assert json.loads((out / "result.json").read_text()) == [0, 1]
    status = _status(out)
    assert status["status"] == "succeeded" and status["error"] is None and status["timed_out"] is False
    assert status["result"] == [0, 1] and status["job"] == "render"
    assert status["started_at"].endswith("Z") and status["finished_at"] >= status["started_at"]
    assert isinstance(status["duration"], float) and status["duration"] >= 0
    assert chute.events == ["startup", "job", "shutdown"]  # type: ignore[attr-defined]


def test_output_dir_is_also_in_the_environment(chute: Chute, tmp_path: Path) -> None:
    assert run_job(chute, find_job(chute, "from_env"), None, tmp_path).ok
    assert (tmp_path / "note.txt").read_text() == "found it"
    assert not (tmp_path / "result.json").exists()  # returned None


def test_failing_job_is_reported_in_status(chute: Chute, tmp_path: Path) -> None:
    outcome = run_job(chute, find_job(chute, "broken"), {}, tmp_path)
    assert not outcome.ok
    status = _status(tmp_path)
    assert status["status"] == "failed" and status["error"] == "RuntimeError: out of GPU memory"
    assert chute.events == ["startup", "shutdown"]  # type: ignore[attr-defined]


def test_invalid_input_fails_before_the_hooks(chute: Chute, tmp_path: Path) -> None:
    outcome = run_job(chute, find_job(chute, "render"), {"frames": "many"}, tmp_path)
    assert outcome.status == "failed" and "invalid input for job 'render'" in (outcome.error or "")
    assert chute.events == []  # type: ignore[attr-defined]


def test_job_timeout(chute: Chute, tmp_path: Path) -> None:
    job = find_job(chute, "forever")
    job.timeout = 1  # type: ignore[misc]  # the SDK allows 30 s at least; tests need less
    outcome = run_job(chute, job, None, tmp_path)
    status = _status(tmp_path)
    assert outcome.status == "failed" and status["timed_out"] is True
    assert status["error"] == "job 'forever' timed out after 1 s"
    assert 1 <= status["duration"] < 3


def test_unknown_job_names_the_jobs(chute: Chute) -> None:
    with pytest.raises(ConfigError, match=r"no job named 'nope'.*render"):
        find_job(chute, "nope")


def test_chutes_run_job_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text(json.dumps({"epochs": 1}))
    out = tmp_path / "outputs"
    chutes = Path(sys.executable).with_name("chutes")
    command = [
        str(chutes),
        "run",
        "tests/runtime/chutes/jobs_app.py:chute",
        "--job",
        "train",
        "--input",
        str(tmp_path / "in.json"),
        "--output-dir",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=runtime_env(), cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert _status(out)["status"] == "succeeded"
    assert (out / "model.txt").read_text() == "trained for 1 epochs\n"
    assert json.loads((out / "logs" / "epochs.json").read_text()) == [0]


@pytest.mark.parametrize("form", ["json", "at-file", "stdin", "path"])
def test_chutes_run_job_with_job_data_and_each_input_form(tmp_path: Path, form: str) -> None:
    """A job declared ``**job_data`` gets ``output_dir`` there (and TMPDIR), and its files stay in the outputs."""
    payload = json.dumps({"rows": 3})
    (tmp_path / "in.json").write_text(payload)
    value, stdin = {
        "json": (payload, None),
        "at-file": (f"@{tmp_path / 'in.json'}", None),
        "stdin": ("-", payload),
        "path": (str(tmp_path / "in.json"), None),
    }[form]
    out = tmp_path / "outputs"
    chutes = Path(sys.executable).with_name("chutes")
    command = [str(chutes), "run", "tests/runtime/chutes/jobs_app.py:chute", "--job", "export", "--input", value]
    result = subprocess.run(
        [*command, "--output-dir", str(out)],
        input=stdin,
        capture_output=True,
        text=True,
        env=runtime_env(),
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    status = _status(out)
    assert status["status"] == "succeeded"
    assert status["result"] == {"keys": ["output_dir", "rows"], "scratch_in_outputs": True}
    assert (out / "export.csv").read_text() == "rows,3\n"
    assert len(list(out.glob("*.tmp"))) == 1


def test_chutes_run_job_refuses_input_that_is_no_json_nor_a_file(tmp_path: Path) -> None:
    chutes = Path(sys.executable).with_name("chutes")
    for value, message in (("{rows: 3}", "--input is not valid JSON"), ("@missing.json", "does not exist")):
        command = [str(chutes), "run", "tests/runtime/chutes/jobs_app.py:chute", "--job", "export", "--input", value]
        result = subprocess.run(command, capture_output=True, text=True, env=runtime_env(), cwd=REPO, timeout=60)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Hint: --input takes JSON" in result.stderr
        assert "Traceback" not in result.stderr


def test_job_environment_is_restored_after_a_run(chute: Chute, tmp_path: Path) -> None:
    import os
    import tempfile

    before = (os.environ.get("TMPDIR"), tempfile.gettempdir())
    run_job(chute, find_job(chute, "from_env"), None, tmp_path)
    assert (tmp_path / "note.txt").read_text() == "found it"
    assert (os.environ.get("TMPDIR"), tempfile.gettempdir()) == before
