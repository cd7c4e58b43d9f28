"""A client that disconnects during a non-streaming call: the gateway closes the instance's connection, the
instance cancels an async cord and frees its slot at once; a sync cord's thread cannot be stopped, so its
slot is freed when the thread returns, and the instance's log says so. The call is metered as 499."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.conftest import Instances
from tests.gateway.support import (
    ALICE_KEY,
    SERVICE,
    RuntimeInstance,
    SchedulerDouble,
    gateway_settings,
    register,
    route_info,
    running_gateway,
    wait_passing,
)
from tests.support.devcluster import DevclusterHandle

pytestmark = pytest.mark.timeout(90)

ALICE = {"Authorization": f"Bearer {ALICE_KEY}"}


async def _in_flight(inst: RuntimeInstance) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{inst.url}/_metrics") as resp:
        families = text_string_to_metric_families(await resp.text())
        return next(float(f.samples[0].value) for f in families if f.name == "chutes_in_flight")


async def _until(predicate: Any, what: str, timeout: float) -> float:
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _abandon(http: aiohttp.ClientSession, url: str, body: dict[str, Any], after: float) -> None:
    """Call and hang up after ``after`` seconds, before the answer (the client disconnects)."""
    with pytest.raises(TimeoutError):
        async with http.post(url, json=body, headers=ALICE, timeout=aiohttp.ClientTimeout(total=after)) as resp:
            await resp.read()


# warm: a first call leaves a kept-alive connection, so the abandoned call takes the path without a task
# (started and relayed from the connections' callbacks); cold: it is served by a task.
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
async def test_a_disconnect_cancels_an_async_cord_and_frees_its_slot(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances, tmp_path: Path, warm: bool
) -> None:
    scheduler.routes[("alice", "gwtest")] = route_info(concurrency=1)
    inst = await instances.start(concurrency=1, log_level="info")
    register(consul, inst)
    await wait_passing(consul, SERVICE, 1)
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        if warm:
            async with http.post(gw.chute_url("/echo"), json={"text": "warm"}, headers=ALICE) as resp:
                assert resp.status == 200, await resp.text()
        await _abandon(http, gw.chute_url("/cancellable"), {"seconds": 60, "tag": "first"}, after=0.8)
        mark = tmp_path / "cancelled-first"
        took = await _until(lambda: asyncio.sleep(0, mark.exists()), "the cord cancelled on the instance", 5)
        assert took < 2.0
        assert await _in_flight(inst) == 0
        # The only slot (concurrency 1) is free: the next call is served at once, not refused as busy.
        async with http.post(gw.chute_url("/echo"), json={"text": "next"}, headers=ALICE) as resp:
            assert resp.status == 200, await resp.text()
        calls = 3 if warm else 2
        await _until(lambda: asyncio.sleep(0, len(scheduler.invocations) >= calls), "invocations reported", 5)
    statuses = {r["cord"]: r["status"] for r in scheduler.invocations}
    assert statuses == {"cancellable": 499, "echo": 200}
    assert "cord cancellable: the client disconnected; the call was cancelled and its slot freed" in inst.log()


async def test_a_disconnect_during_a_sync_cord_frees_the_slot_when_its_thread_returns(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    scheduler.routes[("alice", "gwtest")] = route_info(concurrency=1)
    inst = await instances.start(concurrency=1, log_level="info")
    register(consul, inst)
    await wait_passing(consul, SERVICE, 1)
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        started = time.monotonic()
        await _abandon(http, gw.chute_url("/block"), {"seconds": 2.5}, after=0.5)
        await _until(lambda: asyncio.sleep(0, "its thread runs on" in inst.log()), "the disconnect logged", 3)
        assert await _in_flight(inst) == 1  # the thread still holds the slot
        await _until(lambda: _idle(inst), "the slot freed", 10)
        assert time.monotonic() - started >= 2.0  # not before the thread returned
        assert "the thread of a disconnected call returned; its slot is free" in inst.log()
        async with http.post(gw.chute_url("/echo"), json={"text": "next"}, headers=ALICE) as resp:
            assert resp.status == 200, await resp.text()


async def _idle(inst: RuntimeInstance) -> bool:
    return await _in_flight(inst) == 0
