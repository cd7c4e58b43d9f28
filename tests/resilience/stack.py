"""The whole platform as processes, for chaos and security tests: devcluster, agents, scheduler, gateway.

Built on ``tests.support.stack`` (its ``Stack``, ``TestProcess`` and ``Scheduler``) and ``tests.support.devcluster``;
adds agents with short, configurable TTLs, the gateway process, and helpers to deploy a chute file, follow
its instances in Consul and find the process group of each instance (the devcluster's ``tasks.json``) so a
test can SIGKILL one. Every process runs in its own process group and is stopped at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from chutes.client import Client
from tests.support.devcluster import DevclusterHandle, devcluster
from tests.support.polling import poll_until
from tests.support.processes import TestProcess
from tests.support.stack import Scheduler, Stack, _exe


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_HTTP_", "CHUTES_"))}


def start_agent(stack: Stack, spec: str, *, ttl: float = 3.0, heartbeat: float = 0.5) -> TestProcess:
    """A simulated ``chutes-agent`` for ``NAME=MODEL:COUNT`` with a short TTL (its liveness check)."""
    node, model_count = spec.split("=", 1)
    argv = [
        _exe("chutes-agent"), "run", "--node-id", node, "--simulate", model_count,
        "--nomad-addr", stack.dc.nomad_addr, "--consul-addr", stack.dc.consul_addr,
        "--heartbeat", str(heartbeat), "--ttl", str(ttl), "--probe-interval", "2", "--log-level", "WARNING",
    ]  # fmt: skip
    proc = TestProcess(f"agent-{node}", argv, stack.workdir / f"agent-{node}.log", _clean_env())
    proc.start()
    stack.procs.append(proc)
    return proc


def start_gateway(stack: Stack, scheduler_url: str, key: str, *extra: str) -> tuple[TestProcess, str]:
    """``chutes-gateway`` on a loopback port picked by the kernel; returns the process and its URL."""
    port_file = stack.workdir / f"gateway-{secrets.token_hex(4)}.port"
    argv = [
        _exe("chutes-gateway"), "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
        "--scheduler-url", scheduler_url, "--gateway-key", key, "--consul-addr", stack.dc.consul_addr,
        "--domain", "chutes.test", "--hold-timeout", "60", "--wake-interval", "1", "--metering-interval", "0.5",
        "--log-level", "WARNING", *extra,
    ]  # fmt: skip
    proc = TestProcess("gateway", argv, stack.workdir / "gateway.log", _clean_env())
    proc.start()
    stack.procs.append(proc)

    def port() -> str | None:
        if not proc.alive():
            raise RuntimeError(f"the gateway exited:\n{proc.log(6000)}")
        return port_file.read_text().strip() if port_file.exists() else None

    url = f"http://127.0.0.1:{poll_until(port, 'gateway port', 30)}"
    poll_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, "gateway healthy", 30)
    return proc, url


@dataclass
class FullStack:
    stack: Stack
    sched: Scheduler
    gateway: TestProcess
    gateway_url: str
    agents: dict[str, TestProcess]

    @property
    def dc(self) -> DevclusterHandle:
        return self.stack.dc

    @property
    def admin_key(self) -> str:
        return self.stack.admin_key

    def client(self, key: str, **kwargs: Any) -> Client:
        return Client(self.sched.url, key, gateway_url=self.gateway_url, **kwargs)

    def new_user(self, username: str) -> str:
        with self.client(self.admin_key) as admin:
            return str(admin.create_user(username)["api_key"])

    def deploy(self, key: str, source: str, module: str) -> str:
        """Write ``source`` as ``<module>.py`` in the work dir, deploy it; returns the chute id."""
        path = self.stack.workdir / f"{module}.py"
        path.write_text(source)
        with self.client(key, timeout=60) as client:
            return str(client.deploy(f"{path}:chute")["chute_id"])

    def passing(self, chute_id: str) -> list[dict[str, Any]]:
        """Consul's passing instances of a chute."""
        return list(self.dc.consul().health.service(f"chute-{chute_id}", passing=True)[1])

    def wait_passing(self, chute_id: str, count: int, timeout: float = 90) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            found = self.passing(chute_id)
            return found if len(found) == count else None

        result: list[dict[str, Any]] = poll_until(enough, f"{count} passing instance(s) of {chute_id}", timeout, 0.2)
        return result

    def chute_url(self, username: str, slug: str, path: str) -> str:
        return f"{self.gateway_url}/{username}/{slug}{path}"

    def task_groups(self, chute_id: str | None = None) -> dict[int, str]:
        """Process group → allocation id of the devcluster's running tasks (optionally of one chute's job)."""
        path = Path(self.dc.data_dir) / "tasks.json"
        groups = {int(k): str(v) for k, v in json.loads(path.read_text()).items()}
        if chute_id is None:
            return groups
        allocs = self.dc.nomad().allocations.get_allocations(filter_=f'JobID == "chute-{chute_id}"')
        mine = {a["ID"] for a in allocs}
        return {pgid: alloc for pgid, alloc in groups.items() if alloc in mine}


@contextlib.contextmanager
def full_stack(
    tmp: Path,
    nodes: tuple[str, ...],
    *,
    agent_ttl: float = 3.0,
    scheduler_env: dict[str, str] | None = None,
    gateway_args: tuple[str, ...] = (),
) -> Iterator[FullStack]:
    """Devcluster with ``nodes`` (no local node), one agent per node, a scheduler and a gateway, all healthy."""
    with devcluster(
        nodes=nodes, local_node=False, data_dir=tmp / "devcluster", extra_args=["--session-min-ttl", "1s"]
    ) as dc:
        stack = Stack(dc=dc, workdir=tmp, admin_key="cnk_" + secrets.token_urlsafe(32))
        try:
            agents = {spec.split("=", 1)[0]: start_agent(stack, spec, ttl=agent_ttl) for spec in nodes}
            consul = dc.consul()

            def agents_up() -> bool:
                _, entries = consul.health.service("chutes-agent", passing=True)
                published = all(consul.kv.get(f"chutes/nodes/{n}")[1] is not None for n in agents)
                return published and {e["Service"]["ID"] for e in entries} >= {f"chutes-agent-{n}" for n in agents}

            poll_until(agents_up, "agents publishing inventories", 60)
            sched = stack.scheduler("sched", **{"CHUTES_LOG_LEVEL": "warning", **(scheduler_env or {})})
            sched.start()
            sched.wait_healthy()
            with Client(sched.url, stack.admin_key) as admin:
                gateway_key = str(admin.create_key("gateway", role="gateway")["api_key"])
            gateway, url = start_gateway(stack, sched.url, gateway_key, *gateway_args)
            yield FullStack(stack, sched, gateway, url, agents)
        finally:
            stack.close()


class SteadyLoad:
    """``workers`` threads calling one cord through the gateway back to back, recording every outcome.

    Each call has a distinct body (the instance refuses a replayed signature). ``results`` holds
    (monotonic time, status, pid of the instance or the error text).
    """

    def __init__(self, url: str, key: str, *, workers: int = 3, seconds: float = 0.02, timeout: float = 60) -> None:
        self.url, self.key, self.workers, self.seconds, self.timeout = url, key, workers, seconds, timeout
        self.results: list[tuple[float, int, Any]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counter = itertools.count()

    def _run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self.key}"}, timeout=self.timeout) as http:
            while not self._stop.is_set():
                body = {"n": next(self._counter), "seconds": self.seconds}
                try:
                    resp = http.post(self.url, json=body)
                    outcome = resp.json().get("pid") if resp.status_code == 200 else resp.text[:200]
                    self.results.append((time.monotonic(), resp.status_code, outcome))
                except httpx.HTTPError as exc:
                    self.results.append((time.monotonic(), 0, repr(exc)))

    def __enter__(self) -> SteadyLoad:
        for _ in range(self.workers):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def failures(self, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, int, Any]]:
        return [r for r in self.results if since <= r[0] <= until and r[1] != 200]

    def pids(self, since: float = 0.0) -> set[Any]:
        return {r[2] for r in self.results if r[0] >= since and r[1] == 200}

    def count(self, since: float = 0.0) -> int:
        return sum(1 for r in self.results if r[0] >= since)
