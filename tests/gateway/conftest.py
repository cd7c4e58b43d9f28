"""Fixtures for the gateway's integration tests: one devcluster (its Consul) per module, a scheduler double,
runtime instances started on demand (all killed at the end), and the gateway itself on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.support import RuntimeInstance, SchedulerDouble, route_info, start_instance
from tests.support.devcluster import DevclusterHandle, devcluster


@pytest.fixture(scope="module")
def dc() -> Iterator[DevclusterHandle]:
    with devcluster(nodes=(), local_node=True) as handle:
        yield handle


@pytest.fixture
def consul(dc: DevclusterHandle) -> Iterator[Any]:
    """A py-consul client; every service a test registers is deregistered afterwards."""
    client = dc.consul()
    yield client
    for service_id in client.agent.services():
        client.agent.service.deregister(service_id)


@pytest.fixture
async def scheduler() -> AsyncIterator[SchedulerDouble]:
    double = SchedulerDouble()
    double.routes[("alice", "gwtest")] = route_info()
    await double.start()
    yield double
    await double.close()


class Instances:
    """Starts runtime instances for a test and kills every one of them at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[RuntimeInstance] = []

    async def start(self, concurrency: int = 8, log_level: str = "warning") -> RuntimeInstance:
        inst = await start_instance(self.tmp_path, concurrency=concurrency, log_level=log_level)
        self.started.append(inst)
        return inst

    def kill_all(self) -> None:
        for inst in self.started:
            inst.kill()
            if inst.proc.poll() is None:
                inst.proc.wait(10)


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[Instances]:
    pool = Instances(tmp_path)
    yield pool
    pool.kill_all()
