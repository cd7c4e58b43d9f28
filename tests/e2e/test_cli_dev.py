"""The installed CLI end to end: ``chutes dev`` in the background, deploy, invoke both cords, logs, delete, stop.

Asserts what a user is promised: deploy ends with a ready instance and a curl line, the JSON cord answers,
the streaming cord streams its frames in order, logs come back, delete removes the chute, and stopping
``chutes dev`` leaves no process behind (every descendant, instances included, is gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.polling import poll_until
from tests.support.processes import descendants, wait_written

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
CHUTES = str(Path(sys.executable).parent / "chutes")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    base["CHUTES_CONFIG"] = str(tmp_path / "config.ini")
    base["COLUMNS"] = "200"
    return base


def chutes(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHUTES, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_dev_deploy_invoke_logs_delete_stop(tmp_path: Path, env: dict[str, str]) -> None:
    ready, ports = tmp_path / "ready.json", tmp_path / "ports.json"
    log = (tmp_path / "dev.log").open("wb")
    argv = [
        CHUTES,
        "dev",
        "--simulate",
        "--builds",
        "off",
        "--data-dir",
        str(tmp_path / "data"),
        "--ready-file",
        str(ready),
    ]
    dev = subprocess.Popen([*argv, "--ports-file", str(ports)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_written(ready, dev, "chutes dev up", 120, tmp_path / "dev.log")
        info = json.loads(ready.read_text())
        assert set(json.loads(ports.read_text())) == {"scheduler", "gateway", "nomad", "consul"}
        config = (tmp_path / "config.ini").read_text()
        assert info["api_url"] in config and info["api_key"] in config and info["gateway_url"] in config

        deployed = chutes(env, "deploy", "examples/hello.py:chute", "--timeout", "120", timeout=180)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "ready" in deployed.stdout.lower()
        assert f"{info['gateway_url']}/demo/hello/hello" in deployed.stdout
        assert "curl" in deployed.stdout

        hello = chutes(env, "invoke", "hello", "/hello", "-d", '{"name": "Ada"}')
        assert hello.returncode == 0, hello.stderr
        assert json.loads(hello.stdout)["greeting"] == "Hello, Ada!"

        counted = chutes(env, "invoke", "hello", "/count", "-d", '{"to": 4, "delay": 0}', "--stream")
        assert counted.returncode == 0, counted.stderr
        assert [json.loads(line) for line in counted.stdout.splitlines() if line.strip()] == [
            {"n": 1},
            {"n": 2},
            {"n": 3},
            {"n": 4},
        ]

        logs = chutes(env, "logs", "hello")
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout.strip(), "the instance wrote nothing to its logs"

        # A chute no node can take: refused with the reasons, non-zero exit, nothing deployed.
        big = tmp_path / "big.py"
        big.write_text(
            "from chutes.chute import Chute, NodeSelector\n"
            "chute = Chute(username='demo', name='big', image='python:3.12-slim',\n"
            "              node_selector=NodeSelector(gpu_count=2, min_vram_gb_per_gpu=96))\n"
            "@chute.cord()\n"
            "async def ping(self) -> dict:\n"
            "    return {}\n"
        )
        refused = chutes(env, "deploy", f"{big}:chute", "--timeout", "30")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert refused.stderr.startswith("Error: no node can run 'big'"), refused.stderr
        assert "Hint:" in refused.stderr and "Traceback" not in refused.stderr

        nodes = json.loads(chutes(env, "nodes", "--json").stdout)
        assert {n["node_id"]: n["gpus_free"] for n in nodes} == {"gpu-a": 1, "gpu-b": 2}

        listed = chutes(env, "chutes", "list", "--json")
        assert [c["name"] for c in json.loads(listed.stdout)] == ["hello"]
        deleted = chutes(env, "chutes", "delete", "hello", "--yes")
        assert deleted.returncode == 0, deleted.stderr
        gone = chutes(env, "chutes", "get", "hello")
        assert gone.returncode == 1 and "404" in gone.stderr
    finally:
        before = descendants(dev.pid)
        dev.send_signal(signal.SIGTERM)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            for pid in [dev.pid, *before]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            dev.wait(10)
            pytest.fail("chutes dev did not stop within 60 s of SIGTERM")
        log.close()
    assert dev.returncode == 0, (tmp_path / "dev.log").read_text()
    poll_until(lambda: not [pid for pid in before if alive(pid)], "no process of the stack left", 10)
    assert not ready.exists(), "the ready file must go when the stack stops"
