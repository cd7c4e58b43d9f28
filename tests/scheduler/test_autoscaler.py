"""The autoscaler loop against a real store and real runtime instances (their ``/_metrics``).

Where instances are, how a scale is applied and how much capacity exists are the loop's seams: here they
point at runtime processes started by the test, record the scale in the store, and allow any count, so the
loop's own work (sampling, windows, idle tracking, gateway reports, decisions) runs for real. The full path
through Nomad is in tests/e2e.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from chutes.core.signing import SIGNATURE_HEADER, sign
from chutes.identity import chute_id
from chutes.scheduler import metering
from chutes.scheduler.autoscale import AutoscaleParams
from chutes.scheduler.autoscaler import Autoscaler, parse_instance_metrics
from chutes.scheduler.events import EventHub
from chutes.scheduler.services import Services
from chutes.scheduler.store import Store
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute
from tests.gateway.support import SECRET, RuntimeInstance, start_instance
from tests.scheduler.helpers import manifest
from tests.scheduler.server import make_config

pytestmark = pytest.mark.timeout(60)

PARAMS = AutoscaleParams(interval=5, long_window=60, down_ratio=0.8, scale_down_delay=30)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def instance(tmp_path: Path) -> AsyncIterator[RuntimeInstance]:
    inst = await start_instance(tmp_path, concurrency=2)
    yield inst
    inst.kill()
    await inst.wait_exit()


async def _chute(store: Store, desired: int = 1) -> Chute:
    async with store.session() as s:
        user = await users_repo.create_user(s, "alice")
        chute = Chute(
            id=chute_id("alice", "gwtest"), owner_id=user.id, username="alice", name="gwtest", slug="gwtest",
            manifest=manifest("alice", "gwtest", concurrency=2, max_instances=3, scaling_threshold=0.5,
                              shutdown_after_seconds=60),
            version="0" * 64, invoke_secret=SECRET, desired_instances=desired, status="ready",
        )  # fmt: skip
        s.add(chute)
    return chute


def _autoscaler(store: Store, tmp_path: Path, urls: list[str], clock: Clock) -> tuple[Autoscaler, list[int]]:
    services = Services(
        config=make_config(tmp_path), store=store, events=EventHub(store), public_url="", nomad=None, consul=None
    )
    scaled: list[int] = []

    async def endpoints(_chute_id: str) -> list[str]:
        return list(urls)

    async def scaler(chute: Chute, count: int, reason: str) -> None:
        assert reason.startswith("autoscaler: ")
        scaled.append(count)
        async with store.session() as s:
            row = await s.get(Chute, chute.id)
            assert row is not None
            row.desired_instances = count

    async def capacity(_chute: Chute, extra: int) -> int:
        return extra

    scaler_ = Autoscaler(services, PARAMS, endpoints=endpoints, scaler=scaler, capacity=capacity, clock=clock)
    return scaler_, scaled


async def _slow_calls(inst: RuntimeInstance, count: int, seconds: float) -> list[asyncio.Task[int]]:
    async def one(n: int) -> int:
        body = f'{{"seconds": {seconds}, "n": {n}}}'.encode()
        headers = {SIGNATURE_HEADER: sign(SECRET, "POST", "/sleep", body), "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as http, http.post(f"{inst.url}/sleep", data=body, headers=headers) as r:
            return r.status

    tasks = [asyncio.create_task(one(n)) for n in range(count)]
    await asyncio.sleep(0.3)  # both calls are in flight now
    return tasks


async def test_parse_instance_metrics_from_a_real_runtime(instance: RuntimeInstance) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{instance.url}/_metrics") as resp:
        idle = parse_instance_metrics(await resp.text())
    assert idle.in_flight == 0  # idle time counts from readiness (the runtime stamps it then)
    tasks = await _slow_calls(instance, 2, 1.0)
    async with aiohttp.ClientSession() as http, http.get(f"{instance.url}/_metrics") as resp:
        busy = parse_instance_metrics(await resp.text())
    assert busy.in_flight == 2 and busy.last_request_at is not None
    assert idle.last_request_at is None or busy.last_request_at > idle.last_request_at
    assert await asyncio.gather(*tasks) == [200, 200]


async def test_a_burst_scales_up_at_the_next_tick_and_idle_scales_to_zero(
    sqlite_store: Store, tmp_path: Path, instance: RuntimeInstance
) -> None:
    chute = await _chute(sqlite_store)
    clock = Clock(time.time())  # real time: the instance reports its calls in real time
    autoscaler, scaled = _autoscaler(sqlite_store, tmp_path, [instance.url], clock)

    await autoscaler.tick()  # quiet: nothing to do
    assert scaled == [] and autoscaler.last_decisions[chute.id].target == 1

    tasks = await _slow_calls(instance, 2, 1.5)  # 2 in flight on 1 instance of concurrency 2: utilisation 1.0
    clock.now += PARAMS.interval
    await autoscaler.tick()
    assert scaled == [3]  # 2 calls need floor(2 / (0.5 × 2)) + 1 = 3 instances below the threshold (the max)
    assert await asyncio.gather(*tasks) == [200, 200]

    # New instances never come (the endpoints stay one): the autoscaler waits instead of piling up.
    clock.now += PARAMS.interval
    await autoscaler.tick()
    assert scaled == [3] and "waiting" in autoscaler.last_decisions[chute.id].reason

    # A gateway reported a call recently: not idle yet, whatever the instances say.
    async with sqlite_store.session() as s:
        record = metering.InvocationRecord(
            invocation_id="i1", chute_id=chute.id, caller="u", status=200, duration_ms=1, started_at=clock.now + 50
        )
        await metering.record_invocations(s, [record], clock.now)
    clock.now += 100  # 100 s after the burst, 50 s after the reported call: shutdown_after is 60 s
    await autoscaler.tick()
    assert scaled == [3]
    clock.now += 20
    await autoscaler.tick()
    assert scaled == [3, 0]
    assert "no calls" in autoscaler.last_decisions[chute.id].reason

    clock.now += PARAMS.interval
    await autoscaler.tick()  # at zero: stays there until a call wakes it
    assert scaled == [3, 0]


async def test_a_woken_chute_gets_a_full_idle_period(sqlite_store: Store, tmp_path: Path) -> None:
    chute = await _chute(sqlite_store, desired=0)
    clock = Clock(time.time())
    autoscaler, scaled = _autoscaler(sqlite_store, tmp_path, [], clock)
    await autoscaler.tick()
    async with sqlite_store.session() as s:  # the gateway woke it (POST /v1/internal/chutes/{id}/wake)
        row = await s.get(Chute, chute.id)
        assert row is not None
        row.desired_instances = 1
    for _ in range(11):  # 55 s: still within shutdown_after_seconds of the wake
        clock.now += PARAMS.interval
        await autoscaler.tick()
    assert scaled == []
    clock.now += 10
    await autoscaler.tick()
    assert scaled == [0]


async def test_a_leader_change_in_an_idle_period_keeps_the_idle_clock(
    sqlite_store: Store, tmp_path: Path, instance: RuntimeInstance
) -> None:
    """Leader A sees a call, then idleness; A goes (a new process: nothing in memory) and leader B takes over
    halfway through the idle period. The chute scales to zero when the period that began at the call ends
    (± one tick), not a full period after the change, and nothing scales up meanwhile."""
    async with sqlite_store.session() as s:
        user = await users_repo.create_user(s, "alice")
        chute = Chute(
            id=chute_id("alice", "gwtest"), owner_id=user.id, username="alice", name="gwtest", slug="gwtest",
            manifest=manifest("alice", "gwtest", concurrency=2, max_instances=3, scaling_threshold=0.9,
                              shutdown_after_seconds=60),
            version="0" * 64, invoke_secret=SECRET, desired_instances=1, status="ready",
        )  # fmt: skip
        s.add(chute)
    clock = Clock(time.time())
    leader_a, scaled_a = _autoscaler(sqlite_store, tmp_path, [instance.url], clock)
    await leader_a.tick()
    called_at = time.time()
    tasks = await _slow_calls(instance, 1, 0.5)  # 1 of 2 slots in flight: utilisation 0.5, under 0.9
    clock.now += PARAMS.interval
    await leader_a.tick()
    assert await asyncio.gather(*tasks) == [200]
    for _ in range(4):  # 20 s of idleness under leader A
        clock.now += PARAMS.interval
        await leader_a.tick()
    assert scaled_a == []
    del leader_a  # the leader's process is gone; only the store remains

    leader_b, scaled_b = _autoscaler(sqlite_store, tmp_path, [instance.url], clock)
    zero_at = None
    for _ in range(20):
        clock.now += PARAMS.interval
        await leader_b.tick()
        if scaled_b:
            zero_at = clock.now
            break
    assert scaled_b == [0], "the chute never scaled to zero"  # and never up
    assert zero_at is not None
    assert abs(zero_at - (called_at + 60)) <= PARAMS.interval, zero_at - called_at
