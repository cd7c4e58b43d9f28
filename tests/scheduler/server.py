"""Run the scheduler app on a real uvicorn server on a loopback port picked by the kernel (in this process)."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from chutes.scheduler.app import create_app
from chutes.scheduler.cli import server_config
from chutes.scheduler.config import SchedulerConfig
from chutes.scheduler.services import Services


@dataclass
class RunningScheduler:
    url: str
    admin_key: str
    services: Services

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **kwargs)

    async def new_user(self, username: str) -> str:
        """Create a user through the API; returns its API key."""
        async with self.client(self.admin_key) as http:
            resp = await http.post("/v1/users", json={"username": username})
            assert resp.status_code == 201, resp.text
            return str(resp.json()["api_key"])


def make_config(tmp_path: Path, **overrides: Any) -> SchedulerConfig:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "admin_key": "cnk_" + secrets.token_urlsafe(32),
        "run_loops": False,
        "nomad_addr": "http://127.0.0.1:9",  # nothing listens there: tests that need Nomad pass their own
        "consul_addr": "http://127.0.0.1:9",
        "log_level": "warning",
        # Tests call from one address and try many wrong keys on purpose; the throttle has its own tests.
        "auth_failure_burst": 10_000,
    }
    values.update(overrides)
    return SchedulerConfig(**values)


@asynccontextmanager
async def serve(config: SchedulerConfig) -> AsyncIterator[RunningScheduler]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    app = create_app(config, public_url=url)
    server = uvicorn.Server(server_config(app, config))  # the scheduler's own: edge limits included
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the scheduler did not start")
            await asyncio.sleep(0.02)
        assert config.admin_key is not None
        yield RunningScheduler(url=url, admin_key=config.admin_key, services=app.state.services)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()
