"""The runtime as a Nomad task starts it: the chute from a downloaded bundle, jobs uploaded to the scheduler."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from chutes.bundle import build_bundle
from chutes.runtime.config import ClusterEnv
from chutes.runtime.jobs import UploadError, upload_outputs
from chutes.runtime.source import SourceError, fetch_bundle, load_from_environment
from tests.runtime.fake_scheduler import RUN_TOKEN, TOKEN, fake_scheduler
from tests.runtime.support import SECRET, run_process, signed, wait_ready

pytestmark = pytest.mark.timeout(90)

CHUTES_DIR = Path(__file__).parent / "chutes"


@pytest.fixture(scope="module")
def serve_bundle() -> tuple[bytes, str]:
    bundle = build_bundle(CHUTES_DIR / "lifecycle_app.py", "lifecycle_app:chute")
    return bundle.data, bundle.sha256


@pytest.fixture(scope="module")
def jobs_bundle() -> tuple[bytes, str]:
    bundle = build_bundle(CHUTES_DIR / "jobs_app.py", "jobs_app:chute")
    return bundle.data, bundle.sha256


def test_fetch_checks_the_sha256(serve_bundle: tuple[bytes, str]) -> None:
    data, sha = serve_bundle
    with fake_scheduler(data) as scheduler:
        assert fetch_bundle(scheduler.url, TOKEN, sha.upper()) == data
        with pytest.raises(SourceError, match="sha256 mismatch") as err:
            fetch_bundle(scheduler.url, TOKEN, hashlib.sha256(b"other").hexdigest())
        assert err.value.hint and "refusing" in err.value.hint


def test_fetch_retries_5xx_but_not_4xx(serve_bundle: tuple[bytes, str]) -> None:
    data, sha = serve_bundle
    with fake_scheduler(data) as scheduler:
        scheduler.fail_next = 2
        assert fetch_bundle(scheduler.url, TOKEN, sha, backoff=(0,)) == data
        with pytest.raises(SourceError, match="HTTP 401"):
            fetch_bundle(scheduler.url, "wrong-token", sha, backoff=(0,))
        assert scheduler.downloads == 1
    with pytest.raises(SourceError, match="ConnectError"):
        fetch_bundle(scheduler.url, TOKEN, sha, backoff=(0,))


def test_load_from_environment_extracts_into_the_task_dir(tmp_path: Path, serve_bundle: tuple[bytes, str]) -> None:
    data, sha = serve_bundle
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "stale.py").write_text("raise SystemExit('stale file from an earlier run')\n")
    with fake_scheduler(data) as scheduler:
        env = ClusterEnv(scheduler_url=scheduler.url, instance_token=TOKEN, bundle_sha256=sha, task_dir=tmp_path)
        chute = load_from_environment(env)
    assert [c.name for c in chute.cords] == ["sleep"]
    assert (tmp_path / "bundle" / "lifecycle_app.py").is_file()
    assert not (tmp_path / "bundle" / "stale.py").exists()


def _cluster_env(scheduler_url: str, sha: str, task_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "CHUTES_SCHEDULER_URL": scheduler_url,
        "CHUTES_INSTANCE_TOKEN": TOKEN,
        "CHUTES_BUNDLE_SHA256": sha,
        "CHUTES_CHUTE_ID": "00000000-0000-0000-0000-000000000000",
        "CHUTES_INVOKE_SECRET": SECRET,
        "NOMAD_TASK_DIR": str(task_dir),
        "NOMAD_PORT_http": "0",
        "MARKS_DIR": str(task_dir),
        **extra,
    }


def test_runtime_without_arguments_serves_the_bundle_signed(tmp_path: Path, serve_bundle: tuple[bytes, str]) -> None:
    data, sha = serve_bundle
    with fake_scheduler(data) as scheduler, run_process(tmp_path, env=_cluster_env(scheduler.url, sha, tmp_path)) as rt:
        url = rt.wait_listening()
        wait_ready(url)
        body = json.dumps({"seconds": 0}).encode()
        assert httpx.post(f"{url}/sleep", content=body, timeout=30).status_code == 401
        response = httpx.post(f"{url}/sleep", content=body, headers=signed("POST", "/sleep", body), timeout=30)
        assert response.status_code == 200 and response.json() == {"slept": 0.0}
        assert "127.0.0.1" in rt.log()  # bound to loopback: no NOMAD_IP_http or CHUTES_HOST given


def test_runtime_refuses_a_bundle_with_the_wrong_sha256(tmp_path: Path, serve_bundle: tuple[bytes, str]) -> None:
    data, _ = serve_bundle
    wrong = hashlib.sha256(data + b"tampered").hexdigest()
    with (
        fake_scheduler(data) as scheduler,
        run_process(tmp_path, env=_cluster_env(scheduler.url, wrong, tmp_path)) as rt,
    ):
        code = rt.wait(30)
        log = rt.log()
    assert code == 1
    assert "bundle sha256 mismatch" in log
    assert not (tmp_path / "bundle").exists()  # the bytes were never extracted


def test_job_run_in_a_cluster_uploads_its_outputs(tmp_path: Path, jobs_bundle: tuple[bytes, str]) -> None:
    data, sha = jobs_bundle
    (tmp_path / "payload.json").write_text(json.dumps({"epochs": 3, "output_dir": "/etc"}))
    with fake_scheduler(data) as scheduler:
        env = _cluster_env(scheduler.url, sha, tmp_path, CHUTES_JOB_RUN_ID="run-42", CHUTES_RUN_TOKEN=RUN_TOKEN)
        with run_process(tmp_path, "--job", "train", env=env) as rt:
            code = rt.wait(60)
        assert code == 0, rt.log()
        files = scheduler.uploads["run-42"]
    assert sorted(files) == ["logs/epochs.json", "model.txt", "result.json", "status.json"]
    status = json.loads(files["status.json"])
    assert status["status"] == "succeeded" and status["run_id"] == "run-42" and status["error"] is None
    assert status["result"] == {"loss_x1000": 250}
    # The output folder is the runtime's, whatever the input said.
    assert files["model.txt"] == b"trained for 3 epochs\n"
    assert (tmp_path / "outputs" / "model.txt").is_file()


def test_job_without_upload_sends_only_its_status(tmp_path: Path, jobs_bundle: tuple[bytes, str]) -> None:
    data, sha = jobs_bundle
    (tmp_path / "payload.json").write_text(json.dumps({"epochs": -1}))
    with fake_scheduler(data) as scheduler:
        env = _cluster_env(scheduler.url, sha, tmp_path, CHUTES_JOB_RUN_ID="run-43", CHUTES_RUN_TOKEN=RUN_TOKEN)
        with run_process(tmp_path, "--job", "crunch", env=env) as rt:
            code = rt.wait(60)
        files = scheduler.uploads["run-43"]
    assert code == 1
    assert sorted(files) == ["status.json"]
    status = json.loads(files["status.json"])
    assert status["status"] == "failed" and "epochs must not be negative" in status["error"]


def test_refused_outputs_still_deliver_the_status(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text('{"status": "succeeded"}')
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "blob").write_text("hidden: never uploaded")
    for n in range(3):
        (tmp_path / f"part-{n}.bin").write_bytes(b"x")
    with fake_scheduler() as scheduler:
        assert upload_outputs(scheduler.url, RUN_TOKEN, "r1", tmp_path, include_all=True, backoff=(0,)) == [
            "part-0.bin",
            "part-1.bin",
            "part-2.bin",
            "status.json",
        ]
        scheduler.max_files = 2
        with pytest.raises(UploadError, match="HTTP 413"):
            upload_outputs(scheduler.url, RUN_TOKEN, "r2", tmp_path, include_all=True, backoff=(0,))
        assert sorted(scheduler.uploads["r2"]) == ["status.json"]
