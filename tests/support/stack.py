"""A scheduler stack for end-to-end tests: devcluster, one simulated agent per node, scheduler processes.

Every process is a ``tests.support.processes.TestProcess`` (its own process group, stopped with SIGTERM, then
SIGKILL, at the end). Schedulers
run as real ``chutes-scheduler`` subprocesses so that a test can kill one (SIGKILL) and start it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chutes.client import Client
from tests.support.devcluster import DevclusterHandle, devcluster
from tests.support.polling import poll_until
from tests.support.processes import TestProcess

NODES = ("gpu-a=h100_sxm:8", "gpu-b=a100:4", "gpu-c=l40s:2")


def _exe(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError(f"{name} is not installed next to {sys.executable}; run `make install`")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(url: str, key: str | None = None, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=timeout) as resp:  # loopback only
        return json.loads(resp.read())


@dataclass
class Scheduler(TestProcess):
    port: int = 0
    admin_key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = 30.0) -> dict[str, Any]:
        def healthy() -> Any:
            if not self.alive():
                raise RuntimeError(f"scheduler {self.name} exited:\n{self.log(6000)}")
            return http_json(f"{self.url}/healthz")

        result: dict[str, Any] = poll_until(healthy, f"scheduler {self.name} healthy", timeout)
        return result

    def leads(self) -> bool:
        try:
            return bool(http_json(f"{self.url}/healthz", timeout=2)["leader"])
        except Exception:
            return False


@dataclass
class Stack:
    dc: DevclusterHandle
    workdir: Path
    admin_key: str
    procs: list[TestProcess] = field(default_factory=list)

    def start_agent(self, spec: str) -> TestProcess:
        node, model_count = spec.split("=", 1)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_HTTP_"))}
        argv = [
            _exe("chutes-agent"), "run", "--node-id", node, "--simulate", model_count,
            "--nomad-addr", self.dc.nomad_addr, "--consul-addr", self.dc.consul_addr,
            "--heartbeat", "1", "--ttl", "10", "--probe-interval", "2", "--log-level", "WARNING",
        ]  # fmt: skip
        proc = TestProcess(f"agent-{node}", argv, self.workdir / f"agent-{node}.log", env)
        proc.start()
        self.procs.append(proc)
        return proc

    def scheduler(self, name: str, port: int | None = None, **env: str) -> Scheduler:
        """A scheduler process (not started); all schedulers of a stack share one database."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_HTTP_", "CHUTES_"))}
        base.update(
            {
                "CHUTES_ADMIN_KEY": self.admin_key,
                "CHUTES_DATABASE_URL": f"sqlite+aiosqlite:///{self.workdir / 'scheduler.db'}",
                "CHUTES_RUNTIME_PYTHON": sys.executable,
                "CHUTES_RECONCILE_INTERVAL": "1",
                "CHUTES_WATCH_INTERVAL": "0.3",
                "CHUTES_LEADER_TTL": "3",
                "CHUTES_LEADER_LOCK_DELAY": "0",
                "CHUTES_LOG_LEVEL": "info",
            }
        )
        base.update(env)
        port = port or free_port()
        argv = [
            _exe("chutes-scheduler"), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(self.workdir / name), "--nomad-addr", self.dc.nomad_addr,
            "--consul-addr", self.dc.consul_addr,
        ]  # fmt: skip
        sched = Scheduler(name, argv, self.workdir / f"{name}.log", base, port=port, admin_key=self.admin_key)
        self.procs.append(sched)
        return sched

    def start_gateway(self, sched_url: str, gateway_key: str, *options: str, port: int = 0) -> str:
        """Start ``chutes-gateway`` (on ``port``; 0: a free one) with this stack's Consul, the scheduler at
        ``sched_url`` and the extra command-line ``options``; its URL once it answers ``/healthz``."""
        port_file = self.workdir / "gateway.port"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_HTTP_", "CHUTES_"))}
        argv = [
            _exe("chutes-gateway"), "--host", "127.0.0.1", "--port", str(port), "--port-file", str(port_file),
            "--scheduler-url", sched_url, "--gateway-key", gateway_key, "--consul-addr", self.dc.consul_addr,
            *options,
        ]  # fmt: skip
        proc = TestProcess("gateway", argv, self.workdir / "gateway.log", env)
        proc.start()
        self.procs.append(proc)
        bound = poll_until(lambda: port_file.exists() and port_file.read_text().strip(), "gateway port", 30)
        url = f"http://127.0.0.1:{bound}"
        poll_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, "gateway healthy", 30)
        return url

    def users_and_gateway_key(self, sched_url: str) -> tuple[str, str, str]:
        """The API keys of two new users, alice and bob, and a new gateway key (made with the admin key)."""
        with Client(sched_url, self.admin_key) as admin:
            alice = str(admin.create_user("alice")["api_key"])
            bob = str(admin.create_user("bob")["api_key"])
            gateway_key = str(admin.create_key("gateway", role="gateway")["api_key"])
        return alice, bob, gateway_key

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def _agents_ready(dc: DevclusterHandle, nodes: list[str]) -> bool:
    c = dc.consul()
    for node in nodes:
        _, item = c.kv.get(f"chutes/nodes/{node}")
        if item is None:
            return False
    _, entries = c.health.service("chutes-agent", passing=True)
    return {e["Service"]["ID"] for e in entries} >= {f"chutes-agent-{n}" for n in nodes}


@contextlib.contextmanager
def scheduler_stack(tmp: Path, nodes: tuple[str, ...] = NODES) -> Iterator[Stack]:
    """The devcluster with ``nodes`` and their agents (publishing inventories, alive in Consul)."""
    with devcluster(
        nodes=nodes, local_node=False, data_dir=tmp / "devcluster", extra_args=["--session-min-ttl", "1s"]
    ) as dc:
        stack = Stack(dc=dc, workdir=tmp, admin_key="cnk_" + secrets.token_urlsafe(32))
        try:
            for spec in nodes:
                stack.start_agent(spec)
            names = [spec.split("=", 1)[0] for spec in nodes]
            poll_until(lambda: _agents_ready(dc, names), "agents publishing inventories", 60)
            yield stack
        finally:
            stack.close()
