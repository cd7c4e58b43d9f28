"""Fixtures for the client and CLI tests: a real ``chutes-scheduler`` process on a loopback port (API only)."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from chutes.scheduler.secret_box import generate_key
from tests.support.processes import running

BIN = Path(sys.executable).parent


@dataclass
class Scheduler:
    url: str
    admin_key: str
    log: Path
    secrets_key: str = ""
    data_dir: Path | None = None

    def new_user(self, username: str) -> str:
        resp = httpx.post(
            f"{self.url}/v1/users", json={"username": username}, headers={"Authorization": f"Bearer {self.admin_key}"}
        )
        assert resp.status_code == 201, resp.text
        return str(resp.json()["api_key"])


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scheduler]:
    """``chutes-scheduler serve --no-loops`` with SQLite in a temporary directory; Nomad and Consul unreachable."""
    tmp = tmp_path_factory.mktemp("scheduler")
    port_file, log = tmp / "port", tmp / "scheduler.log"
    admin_key = "cnk_" + secrets.token_urlsafe(32)
    secrets_key = generate_key()
    env = {
        **os.environ,
        "CHUTES_ADMIN_KEY": admin_key,
        "CHUTES_SECRETS_KEY": secrets_key,
        "NOMAD_ADDR": "http://127.0.0.1:9",
        "CONSUL_HTTP_ADDR": "http://127.0.0.1:9",
        "CHUTES_LOG_LEVEL": "warning",
    }
    argv = [str(BIN / "chutes-scheduler"), "serve", "--port", "0", "--port-file", str(port_file)]
    argv += ["--data-dir", str(tmp / "data"), "--no-loops"]
    with running("chutes-scheduler", argv, log, env) as proc:
        url = f"http://127.0.0.1:{proc.wait_port(port_file, 30)}"
        yield Scheduler(url, admin_key, log, secrets_key=secrets_key, data_dir=tmp / "data")


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated CHUTES_CONFIG (never the user's ~/.chutes) and no CHUTES_* settings from the environment."""
    path = tmp_path / "chutes" / "config.ini"
    monkeypatch.setenv("CHUTES_CONFIG", str(path))
    for var in ("CHUTES_SCHEDULER_URL", "CHUTES_API_URL", "CHUTES_API_KEY", "CHUTES_GATEWAY_URL", "CHUTES_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    return path
