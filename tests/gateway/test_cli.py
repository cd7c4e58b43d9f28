"""``chutes-gateway`` as a process: listens on the port it reports, answers /healthz, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.processes import running

pytestmark = pytest.mark.timeout(60)


def _command() -> list[str]:
    script = shutil.which("chutes-gateway", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "chutes.gateway.cli"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "CONSUL_HTTP_"))}


def test_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "gateway.port"
    args = [
        *_command(), "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
        "--scheduler-url", "http://127.0.0.1:9", "--gateway-key", "cnk_" + "g" * 43,
        "--consul-addr", "http://127.0.0.1:9",
    ]  # fmt: skip
    with running("chutes-gateway", args, tmp_path / "gateway.log", _env()) as proc:
        url = f"http://127.0.0.1:{proc.wait_port(port_file, 30)}"
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        assert "chutes_gateway_consul_watches" in httpx.get(f"{url}/metrics").text
        lost = httpx.get(f"{url}/nowhere")
        assert lost.status_code == 404 and lost.headers["x-chutes-invocation-id"]
        # a well-formed key with the scheduler unreachable: 503, not a crash
        down = httpx.post(f"{url}/alice/x/y", headers={"Authorization": "Bearer cnk_" + "a" * 43})
        assert down.status_code == 503 and down.headers["retry-after"]
        proc.signal_group(signal.SIGTERM)
        assert proc.proc is not None and proc.proc.wait(20) == 0


def test_refuses_to_start_without_a_key() -> None:
    done = subprocess.run([*_command(), "--port", "0"], env=_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "CHUTES_GATEWAY_KEY" in done.stderr
