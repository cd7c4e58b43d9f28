"""Configuration from the environment and flags, and the ``chutes-scheduler`` command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from chutes.scheduler.config import ConfigError, load_config
from tests.support.processes import running

pytestmark = pytest.mark.timeout(60)


def test_environment_then_flags() -> None:
    env = {
        "NOMAD_ADDR": "http://nomad.example:4646/",
        "CONSUL_HTTP_ADDR": "127.0.0.1:8500",
        "CHUTES_DATACENTERS": "dc1, dc2",
        "CHUTES_TASK_DRIVER": "docker",
        "CHUTES_PUBLIC_URL": "https://chutes.example/",
        "CHUTES_RECONCILE_INTERVAL": "2.5",
        "CHUTES_DATABASE_URL": "",
    }
    config = load_config(env, port=0, task_driver=None)
    assert config.nomad_addr == "http://nomad.example:4646"
    assert config.consul_addr == "http://127.0.0.1:8500"
    assert config.datacenters == ("dc1", "dc2") and config.task_driver == "docker"
    assert config.public_url == "https://chutes.example" and config.reconcile_interval_s == 2.5
    assert config.port == 0 and config.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert load_config(env, task_driver="raw_exec").task_driver == "raw_exec"
    local = load_config({}, host="0.0.0.0")
    assert local.resolved_public_url(8123) == "http://127.0.0.1:8123"


def test_task_driver_defaults_to_auto_and_containers_get_their_own_way_to_the_scheduler() -> None:
    config = load_config({})
    assert config.task_driver == "auto" and config.container_url("http://127.0.0.1:8700") is None
    dev = load_config({"CHUTES_CONTAINER_SCHEDULER_HOST": "host.containers.internal"})
    # The host changes, the bound port stays (the scheduler of `chutes dev` listens on a free port).
    assert dev.container_url("http://127.0.0.1:41234") == "http://host.containers.internal:41234"
    assert dev.container_url("https://sched.example/api") == "https://host.containers.internal/api"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CHUTES_TASK_DRIVER": "exec"}, "CHUTES_TASK_DRIVER"),
        ({"CHUTES_CONTAINER_SCHEDULER_HOST": "evil/host:1"}, "CHUTES_CONTAINER_SCHEDULER_HOST"),
        ({"CHUTES_SCHEDULER_PORT": "70000"}, "CHUTES_SCHEDULER_PORT"),
        ({"CHUTES_PUBLIC_URL": "ftp://x"}, "CHUTES_PUBLIC_URL"),
        ({"NOMAD_ADDR": "ftp://x"}, "NOMAD_ADDR"),
        ({"CHUTES_DATACENTERS": " , "}, "CHUTES_DATACENTERS"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(env)


def _exe() -> str:
    found = shutil.which("chutes-scheduler", path=str(Path(sys.executable).parent))
    assert found, "chutes-scheduler is not installed; run make install"
    return found


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_", "CONSUL_HTTP_"))}
    env.update({"CHUTES_DATA_DIR": str(tmp_path / "data"), "NOMAD_ADDR": "http://127.0.0.1:9",
                "CONSUL_HTTP_ADDR": "http://127.0.0.1:9"})  # fmt: skip
    return env


def test_create_admin_then_serve_on_port_zero(tmp_path: Path) -> None:
    env = _env(tmp_path)
    made = subprocess.run([_exe(), "create-admin", "--username", "root"], env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().rsplit(" ", 1)[-1]
    assert key.startswith("cnk_") and len(key) == 47

    port_file = tmp_path / "port"
    argv = [_exe(), "--port", "0", "--port-file", str(port_file), "--no-loops"]
    with running("chutes-scheduler", argv, tmp_path / "scheduler.log", env, stop_timeout=15) as proc:
        port = proc.wait_port(port_file, 30)
        assert port > 0
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
        me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {key}"}).json()
        assert me == {"user_id": me["user_id"], "username": "root", "is_admin": True}
    log = proc.log()  # stdout and stderr
    assert proc.exited() == 0, log
    assert "Application shutdown complete" in log
    assert f"listening on http://127.0.0.1:{port}" in log


def test_bad_configuration_exits_2_with_a_message(tmp_path: Path) -> None:
    env = {**_env(tmp_path), "CHUTES_TASK_DRIVER": "podman"}
    result = subprocess.run([_exe(), "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "CHUTES_TASK_DRIVER" in result.stderr and "Traceback" not in result.stderr


def test_busy_port_exits_1_with_a_message(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run([_exe(), "--port", str(port)], env=_env(tmp_path), capture_output=True, text=True,
                                timeout=30)  # fmt: skip
    assert result.returncode == 1 and "cannot start" in result.stderr and "Traceback" not in result.stderr
