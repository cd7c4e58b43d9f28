"""The autoscaler loop against a real store, fed by gateways' utilisation reports stored as the API stores them.

How a scale is applied and how much capacity exists are the loop's seams: here they record the scale in the
store and allow any count, so the loop's own work (reading and summing reports, windows, idle tracking,
decisions, the history kept across leaders) runs for real. Reports are written with the store function the
API calls (``utilisation.record``), at the test's clock; the HTTP side is in test_usage_api.py, and the whole
path (gateway → scheduler → Nomad) in tests/e2e.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from chutes.identity import chute_id
from chutes.scheduler import utilisation
from chutes.scheduler.autoscale import AutoscaleParams
from chutes.scheduler.autoscaler import Autoscaler
from chutes.scheduler.events import EventHub
from chutes.scheduler.services import Services
from chutes.scheduler.store import Store
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute, Instance
from tests.scheduler.helpers import manifest
from tests.scheduler.server import make_config

pytestmark = pytest.mark.timeout(60)

PARAMS = AutoscaleParams(interval=5, long_window=60, down_ratio=0.8, scale_down_delay=30, report_max_age=12)
CID = chute_id("alice", "gwtest")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def report(
    store: Store,
    at: float,
    in_flight: dict[str, int] | None = None,
    *,
    gateway: str = "gw-1",
    held: int = 0,
    last_call_at: float | None = None,
    chute: str = CID,
) -> None:
    """What a gateway's batch stores: its snapshot of ``chute`` (no chute at all with ``in_flight`` None)."""
    chutes: dict[str, Any] = {}
    if in_flight is not None:
        instances = {key: {"in_flight": n} for key, n in in_flight.items()}
        chutes[chute] = {"held": held, "completed": 0, "last_call_at": last_call_at, "instances": instances}
    body = utilisation.UtilisationReport.model_validate({"gateway_id": gateway, "at": at, "chutes": chutes})
    async with store.session() as s:
        assert await utilisation.record(s, "key-1", body, at, PARAMS.report_max_age)


async def ready_instances(store: Store, count: int) -> None:
    """The reconciler's record: ``count`` ready instances of the chute."""
    async with store.session() as s:
        for n in range(count):
            s.add(Instance(alloc_id=f"alloc-{n}", chute_id=CID, state="ready", ready_at=1.0))


async def _chute(store: Store, desired: int = 1, threshold: float = 0.5) -> Chute:
    async with store.session() as s:
        user = await users_repo.create_user(s, "alice")
        chute = Chute(
            id=CID, owner_id=user.id, username="alice", name="gwtest", slug="gwtest",
            manifest=manifest("alice", "gwtest", concurrency=2, max_instances=3, scaling_threshold=threshold,
                              shutdown_after_seconds=60),
            version="0" * 64, invoke_secret="s", desired_instances=desired, status="ready",
        )  # fmt: skip
        s.add(chute)
    return chute


def _autoscaler(store: Store, tmp_path: Path, clock: Clock) -> tuple[Autoscaler, list[int]]:
    services = Services(
        config=make_config(tmp_path), store=store, events=EventHub(store), public_url="", nomad=None, consul=None
    )
    scaled: list[int] = []

    async def scaler(chute: Chute, count: int, reason: str) -> None:
        assert reason.startswith("autoscaler: ")
        scaled.append(count)
        async with store.session() as s:
            row = await s.get(Chute, chute.id)
            assert row is not None
            row.desired_instances = count

    async def capacity(_chute: Chute, extra: int) -> int:
        return extra

    return Autoscaler(services, PARAMS, scaler=scaler, capacity=capacity, clock=clock), scaled


async def test_a_burst_scales_up_at_the_next_tick_and_idle_scales_to_zero(sqlite_store: Store, tmp_path: Path) -> None:
    chute = await _chute(sqlite_store)
    await ready_instances(sqlite_store, 1)
    clock = Clock(time.time())
    autoscaler, scaled = _autoscaler(sqlite_store, tmp_path, clock)

    await report(sqlite_store, clock.now, {"i1": 0})
    await autoscaler.tick()  # quiet: nothing to do
    assert scaled == [] and autoscaler.last_decisions[chute.id].target == 1

    # Two gateways have one call each in flight on the instance (concurrency 2): utilisation 1.0.
    clock.now += PARAMS.interval
    await report(sqlite_store, clock.now, {"i1": 1}, gateway="gw-1")
    await report(sqlite_store, clock.now, {"i1": 1}, gateway="gw-2")
    await autoscaler.tick()
    assert scaled == [3]  # 2 calls need floor(2 / (0.5 × 2)) + 1 = 3 instances below the threshold (the max)

    # New instances never come (one ready, as recorded and as the gateways see it): wait, do not pile up.
    clock.now += PARAMS.interval
    await report(sqlite_store, clock.now, {"i1": 0}, gateway="gw-1", last_call_at=clock.now)
    await report(sqlite_store, clock.now, {"i1": 0}, gateway="gw-2", last_call_at=clock.now - 1)
    await autoscaler.tick()
    assert scaled == [3] and "waiting" in autoscaler.last_decisions[chute.id].reason
    last_call = clock.now

    # gw-2 stops; gw-1 goes on reporting nothing in flight. Idle for shutdown_after_seconds since the last call.
    for _ in range(11):  # 55 s
        clock.now += PARAMS.interval
        await report(sqlite_store, clock.now, {"i1": 0}, gateway="gw-1", last_call_at=last_call)
        await autoscaler.tick()
    assert scaled == [3]
    clock.now += PARAMS.interval
    await report(sqlite_store, clock.now, {"i1": 0}, gateway="gw-1", last_call_at=last_call)
    await autoscaler.tick()
    assert scaled == [3, 0]
    assert "no calls" in autoscaler.last_decisions[chute.id].reason

    clock.now += PARAMS.interval
    await autoscaler.tick()  # at zero: stays there until a call wakes it
    assert scaled == [3, 0]


async def test_calls_held_at_zero_scale_the_chute_up(sqlite_store: Store, tmp_path: Path) -> None:
    """A gateway holding calls for a chute with no instance brings it back even if its wake was lost."""
    chute = await _chute(sqlite_store, desired=0)
    clock = Clock(time.time())
    autoscaler, scaled = _autoscaler(sqlite_store, tmp_path, clock)
    await report(sqlite_store, clock.now, {})
    await autoscaler.tick()
    assert scaled == []
    clock.now += PARAMS.interval
    await report(sqlite_store, clock.now, {}, held=2)
    await autoscaler.tick()
    assert scaled == [1] and "held" in autoscaler.last_decisions[chute.id].reason
    clock.now += PARAMS.interval  # still held (the instance is starting): no pile-up, no scale-down
    await report(sqlite_store, clock.now, {}, held=2)
    await autoscaler.tick()
    assert scaled == [1] and "waiting" in autoscaler.last_decisions[chute.id].reason


async def test_stale_reports_of_a_stopped_gateway_are_ignored(sqlite_store: Store, tmp_path: Path) -> None:
    chute = await _chute(sqlite_store)
    await ready_instances(sqlite_store, 1)
    clock = Clock(time.time())
    autoscaler, scaled = _autoscaler(sqlite_store, tmp_path, clock)
    await report(sqlite_store, clock.now, {"i1": 2}, gateway="gw-dead")  # its last word: busy
    clock.now += PARAMS.report_max_age + 1
    await report(sqlite_store, clock.now, {"i1": 0}, gateway="gw-1")
    await autoscaler.tick()
    assert scaled == [] and autoscaler.last_decisions[chute.id].utilisation_short == 0.0

    # With no fresh report at all nothing is known: no sample (the window keeps what it had), no scale.
    clock.now += PARAMS.report_max_age + 1
    await autoscaler.tick()
    assert scaled == [] and len(autoscaler.histories[chute.id].samples) == 1


async def test_a_woken_chute_gets_a_full_idle_period(sqlite_store: Store, tmp_path: Path) -> None:
    chute = await _chute(sqlite_store, desired=0)
    clock = Clock(time.time())
    autoscaler, scaled = _autoscaler(sqlite_store, tmp_path, clock)
    await autoscaler.tick()
    async with sqlite_store.session() as s:  # the gateway woke it (POST /v1/internal/chutes/{id}/wake)
        row = await s.get(Chute, chute.id)
        assert row is not None
        row.desired_instances = 1
    for _ in range(11):  # 55 s: still within shutdown_after_seconds of the wake
        clock.now += PARAMS.interval
        await report(sqlite_store, clock.now, {})
        await autoscaler.tick()
    assert scaled == []
    clock.now += 10
    await autoscaler.tick()
    assert scaled == [0]


async def test_a_leader_change_in_an_idle_period_keeps_the_idle_clock(sqlite_store: Store, tmp_path: Path) -> None:
    """Leader A sees a call, then idleness; A goes (a new process: nothing in memory) and leader B takes over
    halfway through the idle period. The chute scales to zero when the period that began at the call ends
    (± one tick), not a full period after the change, and nothing scales up meanwhile."""
    await _chute(sqlite_store, threshold=0.9)
    await ready_instances(sqlite_store, 1)
    clock = Clock(time.time())
    leader_a, scaled_a = _autoscaler(sqlite_store, tmp_path, clock)
    await report(sqlite_store, clock.now, {"i1": 0})
    await leader_a.tick()
    clock.now += PARAMS.interval
    await report(sqlite_store, clock.now, {"i1": 1})  # 1 of 2 slots in flight: utilisation 0.5, under 0.9
    await leader_a.tick()
    called_at = clock.now + 0.5
    for _ in range(4):  # 20 s of idleness under leader A; the call ended just after that report
        clock.now += PARAMS.interval
        await report(sqlite_store, clock.now, {"i1": 0}, last_call_at=called_at)
        await leader_a.tick()
    assert scaled_a == []
    del leader_a  # the leader's process is gone; only the store remains (the gateway's report went stale)

    leader_b, scaled_b = _autoscaler(sqlite_store, tmp_path, clock)
    zero_at = None
    for _ in range(20):
        clock.now += PARAMS.interval
        await report(sqlite_store, clock.now, {"i1": 0})  # a restarted gateway: it never saw the call
        await leader_b.tick()
        if scaled_b:
            zero_at = clock.now
            break
    assert scaled_b == [0], "the chute never scaled to zero"  # and never up
    assert zero_at is not None
    assert abs(zero_at - (called_at + 60)) <= PARAMS.interval, zero_at - called_at
