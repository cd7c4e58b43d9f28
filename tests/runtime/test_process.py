"""Whole runtime processes: SIGTERM drains, a failing startup hook exits non-zero, settings are checked."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.runtime.support import REPO, run_process, runtime_env, wait_ready
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(90)

APP = "tests/runtime/chutes/lifecycle_app.py:chute"


def _in_flight(url: str) -> float:
    match = re.search(r"^chutes_in_flight (\S+)$", httpx.get(f"{url}/_metrics").text, re.MULTILINE)
    assert match
    return float(match.group(1))


def test_sigterm_lets_the_call_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    with run_process(tmp_path, APP, "--dev", "--port", "0", env={"MARKS_DIR": str(tmp_path)}) as runtime:
        url = runtime.wait_listening()
        wait_ready(url)
        result: dict[str, httpx.Response] = {}
        caller = threading.Thread(
            target=lambda: result.setdefault("r", httpx.post(f"{url}/sleep", json={"seconds": 2}, timeout=20))
        )
        caller.start()
        poll_until(lambda: _in_flight(url) >= 1, "the first call in flight", 5, 0.02)
        runtime.signal(signal.SIGTERM)
        # Draining: not ready any more, and new calls are turned away, while the first call still runs.
        poll_until(lambda: httpx.get(f"{url}/_ready").status_code == 503, "/_ready 503 after SIGTERM", 10, 0.01)
        assert httpx.get(f"{url}/_ready").json() == {"status": "draining"}
        late = httpx.post(f"{url}/sleep", json={"seconds": 0})
        assert late.status_code == 503 and "draining" in late.json()["detail"]
        caller.join(10)
        assert result["r"].status_code == 200 and result["r"].json() == {"slept": 2.0}
        assert runtime.wait(15) == 0, runtime.log()
    assert (tmp_path / "shutdown-hook-ran").read_text() == "yes"
    assert "draining" in runtime.log()


def test_failing_startup_hook_exits_non_zero_with_the_error_logged(tmp_path: Path) -> None:
    with run_process(tmp_path, APP, "--dev", "--port", "0", env={"FAIL_STARTUP": "1"}) as runtime:
        code = runtime.wait(30)
        log = runtime.log()
    assert code != 0
    assert "startup hook boot failed: RuntimeError: cannot load the model: weights missing" in log
    assert "Traceback" in log  # the traceback is in the log for whoever debugs it


def test_sigterm_during_startup_exits_0_without_becoming_ready(tmp_path: Path) -> None:
    with run_process(tmp_path, APP, "--dev", "--port", "0", env={"STARTUP_DELAY": "30"}) as runtime:
        url = runtime.wait_listening()
        assert httpx.get(f"{url}/_ready").status_code == 503
        runtime.signal(signal.SIGTERM)
        assert runtime.wait(15) == 0, runtime.log()


def test_refuses_to_start_without_a_secret_unless_dev(tmp_path: Path) -> None:
    with run_process(tmp_path, APP, "--port", "0") as runtime:
        code = runtime.wait(30)
        log = runtime.log()
    assert code == 2
    assert "refusing to start: no invoke secret" in log and "CHUTES_INVOKE_SECRET" in log
    assert not runtime.port_file.exists()


def test_chutes_run_is_registered_on_the_cli() -> None:
    chutes = Path(sys.executable).with_name("chutes")
    result = subprocess.run(
        [str(chutes), "run", "--help"], capture_output=True, text=True, env=runtime_env(), cwd=REPO, timeout=30
    )
    assert result.returncode == 0, result.stderr
    for option in ("--port", "--host", "--dev", "--job", "--input", "--output-dir"):
        assert option in result.stdout
