"""Real pieces around a gateway under test: runtime instances, Consul registrations, a scheduler double.

- ``RuntimeInstance``: ``python -m chutes.runtime tests/gateway/chute_app.py:chute`` in its own process group
  on a loopback port picked by the kernel, killed at the end.
- ``register``: what Nomad's service block does for an allocation: a Consul service ``chute-<id>`` with an
  HTTP check on ``/_ready`` (short interval, for tests).
- ``SchedulerDouble``: a small real HTTP server answering the scheduler's four internal endpoints from
  in-memory tables (a test double for the scheduler, not for the gateway), recording wakes, invocations and
  utilisation reports.
- ``running_gateway``: the gateway's aiohttp app on a loopback port in this event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from chutes.gateway.app import Gateway
from chutes.gateway.config import GatewaySettings
from chutes.gateway.discovery import consul_health
from chutes.gateway.scheduler_client import SchedulerClient
from chutes.gateway.server import HttpServer
from chutes.identity import chute_id as make_chute_id
from tests.support.polling import apoll_until
from tests.support.processes import TestProcess, start

REPO = Path(__file__).resolve().parents[2]
CHUTE_REF = "tests/gateway/chute_app.py:chute"
CHUTE_ID = make_chute_id("alice", "gwtest")
SERVICE = f"chute-{CHUTE_ID}"
SECRET = "gateway-test-invoke-secret"
GATEWAY_KEY = "cnk_gateway-test-key"
ALICE_KEY, BOB_KEY, CAROL_KEY = ("cnk_" + name.ljust(43, "0") for name in ("alice", "bob", "carol"))
KEYS = {ALICE_KEY: ("u-alice", "alice"), BOB_KEY: ("u-bob", "bob"), CAROL_KEY: ("u-carol", "carol")}

CORDS = [
    {"name": "echo", "path": "/echo", "public_api_path": "/echo", "public_api_method": "POST"},
    {"name": "sleep", "path": "/sleep", "public_api_path": "/sleep", "public_api_method": "POST"},
    {"name": "stream", "path": "/stream", "public_api_path": "/stream", "public_api_method": "POST", "stream": True},
    {"name": "cancellable", "path": "/cancellable", "public_api_path": "/cancellable", "public_api_method": "POST"},
    {"name": "block", "path": "/block", "public_api_path": "/block", "public_api_method": "POST"},
]


def route_info(concurrency: int = 8, public: bool = False, shared_with: list[str] | None = None) -> dict[str, Any]:
    """The RouteInfo the scheduler would answer for alice's 'gwtest' chute."""
    return {
        "chute_id": CHUTE_ID,
        "username": "alice",
        "name": "gwtest",
        "slug": "gwtest",
        "public": public,
        "shared_with": shared_with or [],
        "concurrency": concurrency,
        "invoke_secret": SECRET,
        "service": SERVICE,
        "cords": CORDS,
        "max_instances": 4,
        "host_label": "alice-gwtest",
    }


@dataclass
class RuntimeInstance:
    """One runtime process serving the test chute."""

    child: TestProcess
    port_file: Path
    log_path: Path
    port: int = 0
    service_id: str = ""

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.child.proc is not None
        return self.child.proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.child.signal_group(sig)

    async def wait_exit(self, timeout: float = 20) -> int | None:
        """The exit status once the process has ended; None if it still runs after ``timeout``."""

        async def exited() -> bool:
            return self.proc.poll() is not None

        with contextlib.suppress(AssertionError):
            await apoll_until(exited, "the runtime's exit", timeout, retry_on=())
        return self.proc.poll()


async def start_instance(
    tmp_path: Path, concurrency: int = 8, secret: str = SECRET, log_level: str = "warning"
) -> RuntimeInstance:
    """Start a runtime and wait until ``/_ready`` answers 200 (cancelled cords leave marks in ``tmp_path``)."""
    stamp = time.monotonic_ns()
    port_file = tmp_path / f"runtime-{stamp}.port"
    log_path = tmp_path / f"runtime-{stamp}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_"))}
    env.update(PYTHONUNBUFFERED="1", GW_TEST_CONCURRENCY=str(concurrency), GW_TEST_MARKS=str(tmp_path))
    cmd = [
        sys.executable, "-m", "chutes.runtime", CHUTE_REF, "--host", "127.0.0.1", "--port", "0",
        "--port-file", str(port_file), "--invoke-secret", secret, "--drain-timeout", "5", "--log-level", log_level,
    ]  # fmt: skip
    inst = RuntimeInstance(start("runtime", cmd, log_path, env, cwd=REPO), port_file, log_path)

    async def ready() -> bool:
        if inst.proc.poll() is not None:
            raise RuntimeError(f"runtime exited with {inst.proc.returncode}:\n{inst.log()}")
        if not inst.port and port_file.exists() and port_file.read_text().strip():
            inst.port = int(port_file.read_text().strip())
        if not inst.port:
            return False
        async with http.get(f"{inst.url}/_ready") as resp:
            return resp.status == 200

    async with aiohttp.ClientSession() as http:
        try:
            await apoll_until(ready, "the runtime ready", 30, retry_on=(aiohttp.ClientError,))
        except AssertionError:
            inst.kill()
            raise AssertionError(f"runtime not ready within 30 s:\n{inst.log()}") from None
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None
    return inst


def register(consul: Any, inst: RuntimeInstance, service: str = SERVICE, interval: str = "200ms") -> str:
    """Register ``inst`` in Consul as Nomad's service block would, with an HTTP check on /_ready."""
    import consul as consul_lib

    service_id = f"_nomad-task-{inst.port}-runtime-{service}-http"
    check = consul_lib.Check.http(f"{inst.url}/_ready", interval=interval, timeout="1s")
    consul.agent.service.register(
        service, service_id=service_id, address="127.0.0.1", port=inst.port, tags=["chutes"], check=check
    )
    inst.service_id = service_id
    return service_id


async def wait_passing(consul: Any, service: str, count: int, timeout: float = 10) -> None:
    """Until ``count`` instances of ``service`` pass their checks in Consul."""

    async def passing() -> bool:
        _, nodes = await asyncio.to_thread(consul.health.service, service, passing=True)
        return len(nodes) == count

    await apoll_until(passing, f"{service}: {count} passing instances", timeout, retry_on=())


@dataclass
class SchedulerDouble:
    """The scheduler's internal API for gateways, from in-memory tables."""

    routes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(KEYS))
    wakes: list[str] = field(default_factory=list)
    invocations: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)  # the utilisation reports, in order
    auth_calls: int = 0
    route_calls: int = 0
    on_wake: Callable[[str], Awaitable[None]] | None = None
    down: bool = False
    url: str = ""
    _runner: web.AppRunner | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def _gateway_only(self, request: web.Request) -> web.Response | None:
        if self.down:
            return web.json_response({"detail": "down"}, status=503)
        if request.headers.get("Authorization") != f"Bearer {GATEWAY_KEY}":
            return web.json_response({"detail": "not a gateway key"}, status=403)
        return None

    async def _authenticate(self, request: web.Request) -> web.Response:
        if (refused := self._gateway_only(request)) is not None:
            return refused
        self.auth_calls += 1
        found = self.keys.get((await request.json()).get("api_key", ""))
        if found is None:
            return web.json_response({"detail": "invalid or revoked API key"}, status=401)
        return web.json_response({"user_id": found[0], "username": found[1], "is_admin": False})

    async def _route(self, request: web.Request) -> web.Response:
        if (refused := self._gateway_only(request)) is not None:
            return refused
        self.route_calls += 1
        info = self.routes.get((request.match_info["username"], request.match_info["slug"]))
        if info is None:
            return web.json_response({"detail": "no such chute"}, status=404)
        return web.json_response(info)

    async def _wake(self, request: web.Request) -> web.Response:
        if (refused := self._gateway_only(request)) is not None:
            return refused
        chute_id = request.match_info["chute_id"]
        first = chute_id not in self.wakes
        self.wakes.append(chute_id)
        if first and self.on_wake is not None:
            task = asyncio.create_task(self.on_wake(chute_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response({"chute_id": chute_id, "desired_instances": 1, "woken": first})

    async def _invocations(self, request: web.Request) -> web.Response:
        if (refused := self._gateway_only(request)) is not None:
            return refused
        body = await request.json()
        records = body["records"]
        self.invocations.extend(records)
        if body.get("utilisation") is not None:
            self.reports.append(body["utilisation"])
        return web.json_response({"accepted": len(records)}, status=202)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/internal/authenticate", self._authenticate)
        app.router.add_get("/v1/internal/routes/{username}/{slug}", self._route)
        app.router.add_post("/v1/internal/chutes/{chute_id}/wake", self._wake)
        app.router.add_post("/v1/internal/invocations", self._invocations)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class RunningGateway:
    gateway: Gateway
    url: str
    settings: GatewaySettings

    def chute_url(self, path: str, username: str = "alice", slug: str = "gwtest") -> str:
        return f"{self.url}/{username}/{slug}{path}"


def gateway_settings(scheduler_url: str, consul_addr: str, **overrides: Any) -> GatewaySettings:
    base = GatewaySettings(
        scheduler_url=scheduler_url,
        scheduler_key=GATEWAY_KEY,
        consul_addr=consul_addr,
        domain="chutes.test",
        consul_wait="5s",
        hold_timeout=20.0,
        wake_interval=1.0,
        metering_interval=0.1,
        cooldown=1.0,
        retry_after_unavailable=2,
    )
    return replace(base, **overrides)


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[RunningGateway]:
    """The gateway served by its HTTP server on a loopback port (port 0) in this event loop, stopped at the end."""
    scheduler = SchedulerClient(settings.scheduler_url, settings.scheduler_key, timeout=5)
    consul = consul_health(settings.consul_addr, request_timeout=15)
    gateway = Gateway(settings, scheduler, consul.health)
    server = HttpServer(gateway.handle, settings.limits, settings.max_body_bytes, fast=gateway.serve_now)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        await gateway.start()
        await server.start(sock)
        yield RunningGateway(gateway, f"http://127.0.0.1:{sock.getsockname()[1]}", settings)
    finally:
        await asyncio.wait_for(server.shutdown(5), 15)
        await gateway.close()
        sock.close()
        await scheduler.close()
        await consul.close()
