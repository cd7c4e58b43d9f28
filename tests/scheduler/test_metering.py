"""Metering: exact billing arithmetic (pure); invocation records and GPU-time rows in the store (SQLite, PostgreSQL)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from chutes.identity import chute_id
from chutes.scheduler import metering
from chutes.scheduler.metering import (
    CallCounts,
    GPUInterval,
    InvocationRecord,
    SyncState,
    build_report,
    epoch_day_of,
    split_by_day,
)
from chutes.scheduler.store import Store
from chutes.scheduler.store import instances as instances_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.metering_models import InstanceUsage
from chutes.scheduler.store.models import Chute, Instance
from tests.scheduler.helpers import manifest

DAY = 86400
D0 = epoch_day_of(date(2025, 3, 1))
T0 = float(D0 * DAY)  # 2025-03-01T00:00:00Z


def _iv(model: str, count: int, start: float, end: float | None, owner: str = "u1", chute: str = "c1") -> GPUInterval:
    price = metering.hourly_price(model)
    assert price is not None
    return GPUInterval(owner, "alice", chute, "echo", model, count, price, start, end)


def test_split_by_day_is_exact_across_midnight() -> None:
    parts = split_by_day(T0 + DAY - 0.25, T0 + DAY + 3600.5)
    assert parts == [(D0, Decimal("0.25")), (D0 + 1, Decimal("3600.5"))]
    assert split_by_day(T0, T0) == []
    three = split_by_day(T0 + 100, T0 + 2 * DAY + 100)
    assert [d for d, _ in three] == [D0, D0 + 1, D0 + 2]
    assert sum(s for _, s in three) == Decimal(2 * DAY)


def test_costs_exact_to_the_cent_with_known_timings() -> None:
    # h100_sxm at $2.35/GPU/h, 2 GPUs, 90 minutes        -> 2.35 × 2 × 1.5        = 7.05
    # a100 at $1.20/GPU/h, 1 GPU, 1000 s                 -> 1.20 × 1000 / 3600    = 0.3333… -> 0.33
    # l40s at $0.85/GPU/h, 4 GPUs, 23:30 → 00:45 next day -> day 1: 0.85×4×0.5 = 1.70; day 2: 0.85×4×0.75 = 2.55
    intervals = [
        _iv("h100_sxm", 2, T0 + 3600, T0 + 3600 + 5400),
        _iv("a100", 1, T0 + 10_000, T0 + 11_000, chute="c2"),
        _iv("l40s", 4, T0 + DAY - 1800, T0 + DAY + 2700, chute="c3"),
    ]
    lines = build_report(intervals, [], D0, D0 + 1, now=T0 + 5 * DAY)
    costs = {(ln.day - D0, ln.chute_id): ln.cost for ln in lines}
    assert costs == {
        (0, "c1"): Decimal("7.05"),
        (0, "c2"): Decimal("0.33"),
        (0, "c3"): Decimal("1.70"),
        (1, "c3"): Decimal("2.55"),
    }
    assert sum(costs.values()) == Decimal("11.63")
    gpu_seconds = {(ln.day - D0, ln.chute_id): ln.gpu_seconds for ln in lines}
    assert gpu_seconds[(0, "c1")] == Decimal(2 * 5400)
    assert gpu_seconds[(1, "c3")] == Decimal(4 * 2700)


def test_sub_second_timings_and_half_cent_rounding() -> None:
    # $0.25/h for 1 GPU: 72 s = $0.005 exactly -> half up to $0.01; 71.9 s -> $0.00 (times to the microsecond)
    lines = build_report([_iv("3090", 1, T0 + 0.1, T0 + 72.1)], [], D0, D0, now=T0 + DAY)
    assert lines[0].gpu_seconds == Decimal("72.0")
    assert lines[0].cost == Decimal("0.01")
    lines = build_report([_iv("3090", 1, T0 + 0.2, T0 + 72.1)], [], D0, D0, now=T0 + DAY)
    assert lines[0].cost == Decimal("0.00")


def test_running_instances_count_up_to_now_and_days_outside_are_left_out() -> None:
    lines = build_report([_iv("h100_sxm", 1, T0 - DAY, None)], [], D0, D0, now=T0 + 1800)
    assert len(lines) == 1 and lines[0].day == D0
    assert lines[0].gpu_seconds == Decimal(1800)
    assert lines[0].cost == Decimal("1.18")  # 2.35 / 2 = 1.175 -> 1.18


def test_calls_and_gpu_time_share_a_line_per_day_user_chute() -> None:
    calls = [CallCounts(D0, "u1", "c1", 10, 2, 1234.5, 100, 2000), CallCounts(D0, "u2", "c1", 3, 0, 30.0, 3, 30)]
    lines = build_report([_iv("a100", 1, T0, T0 + 3600)], calls, D0, D0, now=T0 + DAY)
    by_user = {ln.user_id: ln for ln in lines}
    assert by_user["u1"].invocations == 10 and by_user["u1"].cost == Decimal("1.20")
    assert by_user["u2"].invocations == 3 and by_user["u2"].cost == Decimal(0)  # callers of a shared chute


def test_unknown_gpu_model_has_no_price() -> None:
    assert metering.hourly_price(None) is None
    assert metering.hourly_price("no-such-gpu") is None
    assert metering.hourly_price("h200") == Decimal("2.75")


async def _chute(store: Store, username: str = "alice", name: str = "echo") -> Chute:
    async with store.session() as s:
        user = await users_repo.create_user(s, username)
        chute = Chute(
            id=chute_id(username, name), owner_id=user.id, username=username, name=name, slug=name,
            manifest=manifest(username, name, node_selector={"gpu_count": 2, "include": ["a100", "h100_sxm"]}),
            version="0" * 64, invoke_secret="s", desired_instances=1, status="ready",
        )  # fmt: skip
        s.add(chute)
    return chute


async def test_invocations_are_stored_once_and_aggregated_per_day(store: Store) -> None:
    records = [
        InvocationRecord(
            invocation_id=f"i{n}",
            chute_id="c1",
            caller="u1",
            cord="echo",
            status=200 if n % 4 else 500,
            duration_ms=10.0,
            bytes_in=5,
            bytes_out=7,
            started_at=T0 + n * 3600,
        )
        for n in range(30)
    ]
    async with store.session() as s:
        assert await metering.record_invocations(s, records, T0) == 30
    async with store.session() as s:  # a gateway's retry of the same batch adds nothing
        await metering.record_invocations(s, records[:10], T0)
    async with store.session() as s:
        counts = await metering.calls_for(s, D0, D0 + 1, "u1", None)
    by_day = {c.day - D0: c for c in counts}
    assert by_day[0].calls == 24 and by_day[1].calls == 6
    assert by_day[0].errors == 6 and by_day[1].errors == 2  # n = 0, 4, …, 20 and 24, 28
    assert by_day[0].bytes_in == 24 * 5 and by_day[0].bytes_out == 24 * 7
    assert by_day[0].duration_ms == 240.0


async def test_gpu_time_rows_follow_instance_records(store: Store) -> None:
    chute = await _chute(store)
    state = SyncState()
    obs = instances_repo.Observed("alloc-1", chute.id, "v", "ready", "gpu-b", None, "a100", 2)
    async with store.session() as s:
        await instances_repo.record(s, obs)
        await instances_repo.record(
            s, instances_repo.Observed("alloc-2", chute.id, "v", "running", "gpu-a", None, "h100_sxm", 2)
        )  # never ready: never billed
    async with store.session() as s:
        assert await metering.sync_instance_usage(s, 2e9, state) == 1
    async with store.session() as s:
        row = await s.get(InstanceUsage, "alloc-1")
        assert row is not None and row.stopped_at is None
        assert (row.owner_username, row.gpu_model, row.gpu_count) == ("alice", "a100", 2)
        assert Decimal(row.hourly_usd_per_gpu) == Decimal("1.20")
        assert await s.get(InstanceUsage, "alloc-2") is None
        ready_at = row.ready_at
    async with store.session() as s:
        await instances_repo.record(s, instances_repo.Observed("alloc-1", chute.id, "v", "stopped"))
    async with store.session() as s:
        assert await metering.sync_instance_usage(s, 2e9 + 10, state) == 1
    async with store.session() as s:
        row = await s.get(InstanceUsage, "alloc-1")
        assert row is not None and row.stopped_at is not None and row.stopped_at >= ready_at
        assert await metering.sync_instance_usage(s, 2e9 + 20, state) == 0  # closed rows stay closed


async def test_gpu_time_of_a_purged_chute_closes_at_last_seen(store: Store) -> None:
    chute = await _chute(store)
    state = SyncState()
    async with store.session() as s:
        await instances_repo.record(
            s, instances_repo.Observed("alloc-9", chute.id, "v", "ready", None, None, "a100", 2)
        )
    async with store.session() as s:
        await metering.sync_instance_usage(s, 3e9, state)
    from chutes.scheduler.store import chutes as chutes_repo

    async with store.session() as s:
        await chutes_repo.purge(s, chute.id)
    async with store.session() as s:
        assert await metering.sync_instance_usage(s, 3e9 + 500, state) == 1
    async with store.session() as s:
        row = await s.get(InstanceUsage, "alloc-9")
        assert row is not None and row.stopped_at == 3e9  # the last time it was seen running


async def _record(store: Store, alloc: str, cid: str, state: str, at: float, model: str = "a100") -> None:
    async with store.session() as s:
        await instances_repo.record(s, instances_repo.Observed(alloc, cid, "v", state, "gpu-b", None, model, 2, at=at))


async def _usage(store: Store, now: float, cid: str) -> list[metering.UsageLine]:
    async with store.session() as s:
        intervals = await metering.live_intervals(s, T0, T0 + 2 * DAY, None, cid, now)
    return build_report(intervals, [], D0, D0 + 1, now)


async def test_usage_counts_running_instances_up_to_now_and_the_final_figure_is_unchanged(store: Store) -> None:
    chute = await _chute(store)
    state = SyncState()
    await _record(store, "alloc-live", chute.id, "running", T0 + 100)
    await _record(store, "alloc-live", chute.id, "ready", T0 + 130)
    # Before any metering tick: the ready instance counts already, marked running, and grows with time.
    (early,) = await _usage(store, T0 + 190, chute.id)
    assert early.gpu_seconds == Decimal(2 * 60) and early.running == 1
    assert early.gpu_models == {"a100"}
    async with store.session() as s:
        assert await metering.sync_instance_usage(s, T0 + 200, state) == 1
    (later,) = await _usage(store, T0 + 1930, chute.id)
    assert later.gpu_seconds == Decimal(2 * 1800) and later.running == 1
    assert later.cost == Decimal("1.20")  # a100 at $1.20/GPU/h, 2 GPUs, 30 minutes
    # Stopped; the metering loop has not run yet: the figure already ends at the stop ...
    await _record(store, "alloc-live", chute.id, "stopped", T0 + 3730)
    (stopped,) = await _usage(store, T0 + 9000, chute.id)
    assert stopped.running == 0 and stopped.gpu_seconds == Decimal(2 * 3600)
    # ... and is the same to the cent once the loop has closed the row.
    async with store.session() as s:
        assert await metering.sync_instance_usage(s, T0 + 9000, state) == 1
    (final,) = await _usage(store, T0 + 20000, chute.id)
    assert (final.gpu_seconds, final.cost, final.running) == (stopped.gpu_seconds, stopped.cost, 0)
    assert final.cost == Decimal("2.40")


async def test_only_ready_time_is_billed_crash_loops_and_outages_are_not(store: Store) -> None:
    chute = await _chute(store)
    state = SyncState()
    # Never ready (a crash loop from the start): never billed.
    await _record(store, "alloc-loop", chute.id, "running", T0 + 10)
    await _record(store, "alloc-loop", chute.id, "failing", T0 + 20)
    # Ready for 10 minutes, then failing (its task crashed at T0+700), ready again at T0+1000, stopped at T0+1600.
    await _record(store, "alloc-flaky", chute.id, "ready", T0 + 100)
    async with store.session() as s:
        await metering.sync_instance_usage(s, T0 + 150, state)
    await _record(store, "alloc-flaky", chute.id, "failing", T0 + 700)
    (during,) = await _usage(store, T0 + 900, chute.id)
    assert during.gpu_seconds == Decimal(2 * 600) and during.running == 0  # stopped counting at the crash
    async with store.session() as s:
        await metering.sync_instance_usage(s, T0 + 900, state)
    await _record(store, "alloc-flaky", chute.id, "ready", T0 + 1000)
    async with store.session() as s:
        await metering.sync_instance_usage(s, T0 + 1100, state)
    await _record(store, "alloc-flaky", chute.id, "stopped", T0 + 1600)
    async with store.session() as s:
        await metering.sync_instance_usage(s, T0 + 1700, state)
        rows = sorted((await s.execute(select(InstanceUsage))).scalars(), key=lambda u: u.ready_at)
    assert [(r.ready_at - T0, (r.stopped_at or 0) - T0) for r in rows] == [(100, 700), (1000, 1600)]
    assert rows[0].alloc_id == "alloc-flaky" and rows[1].alloc_id.startswith("alloc-flaky/")
    (line,) = await _usage(store, T0 + 5000, chute.id)
    assert line.gpu_seconds == Decimal(2 * 1200)


def test_segment_end_rules() -> None:
    def inst(state: str, ready: float | None, unready: float | None = None, stopped: float | None = None) -> Any:
        return Instance(alloc_id="a", chute_id="c", state=state, ready_at=ready, unready_at=unready, stopped_at=stopped)

    assert metering.segment_end(10, inst("ready", 10), 99) is None
    assert metering.segment_end(10, inst("stopped", 10, None, 50), 99) == 50
    assert metering.segment_end(10, inst("failed", 10, 30, 50), 99) == 30  # not ready from 30 on
    assert metering.segment_end(10, inst("ready", 60, 30), 99) == 30  # ready again at 60: a new segment
    assert metering.segment_end(10, inst("ready", 60, 5), 99) == 60  # the gap was not recorded
    assert metering.segment_end(10, None, 99) == 99  # the record is gone: up to when it was last seen
