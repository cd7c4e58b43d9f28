"""A Consul outage keeps the last known routing table; the watch recovers when Consul is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.gateway.conftest import Instances
from tests.gateway.support import (
    ALICE_KEY,
    SERVICE,
    SchedulerDouble,
    gateway_settings,
    register,
    running_gateway,
    wait_passing,
)
from tests.support.devcluster import DevclusterHandle, devcluster

pytestmark = pytest.mark.timeout(90)

ALICE = {"Authorization": f"Bearer {ALICE_KEY}"}


@pytest.fixture
def own_dc() -> Iterator[DevclusterHandle]:
    with devcluster(nodes=()) as handle:
        yield handle


async def test_outage_keeps_the_table_and_the_watch_recovers(
    own_dc: DevclusterHandle, scheduler: SchedulerDouble, instances: Instances
) -> None:
    consul = own_dc.consul()
    inst = await instances.start()
    register(consul, inst)
    await wait_passing(consul, SERVICE, 1)
    async with (
        running_gateway(gateway_settings(scheduler.url, own_dc.consul_addr)) as gw,
        aiohttp.ClientSession() as http,
    ):
        n = 0

        async def call() -> int:
            nonlocal n
            n += 1
            async with http.post(gw.chute_url("/echo"), json={"n": n}, headers=ALICE) as resp:
                return resp.status

        assert await call() == 200
        watch = gw.gateway.discovery.watches[SERVICE]
        await asyncio.to_thread(own_dc.stop)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert await call() == 200  # Consul is gone; the instance is still called
            await asyncio.sleep(0.1)
        assert not watch.healthy and len(watch.upstreams) == 1
        await asyncio.to_thread(own_dc.start)
        consul = own_dc.consul()
        register(consul, inst)  # whatever the restarted Consul remembers, the instance is registered again
        await wait_passing(consul, SERVICE, 1)
        deadline = time.monotonic() + 15  # the watch backs off (up to 10 s) while Consul is down
        while not watch.healthy:
            assert time.monotonic() < deadline, "the watch did not recover"
            await asyncio.sleep(0.1)
        assert len(watch.upstreams) == 1
        assert await call() == 200
