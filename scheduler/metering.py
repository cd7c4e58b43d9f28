"""Metering: what each user used, per chute and per day, and what it costs.

Two sources: invocation records sent by the gateways (``POST /v1/internal/invocations``), and the GPU time
of every instance from ready to stop, priced at the hourly rate of the GPU model it actually ran on (the
model of the node the allocation was placed on, as the reconciler records it; the catalog gives the price).
GPU time is billed to the chute's owner; invocations are counted for the caller.

The arithmetic is pure and in ``Decimal``: timestamps are taken to the microsecond, seconds split at UTC
midnight, each (day, user, chute) line rounded half-up to the cent, and totals summed from the lines, so a
report adds up exactly. The recording functions and the leader loop (which turns the scheduler's instance
records into GPU-time rows) are the thin I/O shell around it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from chutes import gpus
from chutes.scheduler.store import upsert
from chutes.scheduler.store.metering_models import InstanceUsage, Invocation
from chutes.scheduler.store.models import Chute, Instance
from chutes.scheduler.utilisation import UtilisationReport

if TYPE_CHECKING:
    from chutes.scheduler.loops import LeaderLoop
    from chutes.scheduler.services import Services

log = logging.getLogger(__name__)

CENT = Decimal("0.01")
MICROSECOND = Decimal("0.000001")
SECONDS_PER_HOUR = Decimal(3600)
SECONDS_PER_DAY = 86400
TERMINAL_STATES = frozenset({"stopped", "failed", "lost"})
WATERMARK_SLACK = 120.0


# --- pure arithmetic -------------------------------------------------------------------------------------


def exact(t: float) -> Decimal:
    """A UNIX time (or duration) as a Decimal, to the microsecond (floats carry no more than that)."""
    return Decimal(repr(float(t))).quantize(MICROSECOND, rounding=ROUND_HALF_UP)


def to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def hourly_price(gpu_model: str | None) -> Decimal | None:
    """The catalog's hourly USD price of one GPU of ``gpu_model``; None when the model is unknown."""
    if gpu_model is None:
        return None
    gpu = gpus.CATALOG.get(gpu_model)
    return None if gpu is None else Decimal(str(gpu.hourly_usd))


def gpu_cost(seconds: Decimal, gpu_count: int, hourly_per_gpu: Decimal) -> Decimal:
    """Unrounded USD cost of ``gpu_count`` GPUs for ``seconds`` at ``hourly_per_gpu``."""
    return seconds * gpu_count * hourly_per_gpu / SECONDS_PER_HOUR


def epoch_day(t: float) -> int:
    """UTC days since 1970-01-01 of a UNIX time."""
    return math.floor(t / SECONDS_PER_DAY)


def day_of(epoch_days: int) -> date:
    return date.fromordinal(date(1970, 1, 1).toordinal() + epoch_days)


def epoch_day_of(d: date) -> int:
    return d.toordinal() - date(1970, 1, 1).toordinal()


def split_by_day(start: float, end: float) -> list[tuple[int, Decimal]]:
    """Seconds of [start, end) in each UTC day it touches: [(epoch day, seconds)], exact."""
    lo, hi = exact(start), exact(end)
    parts: list[tuple[int, Decimal]] = []
    while lo < hi:
        day = epoch_day(float(lo))
        boundary = Decimal((day + 1) * SECONDS_PER_DAY)
        upto = min(hi, boundary)
        parts.append((day, upto - lo))
        lo = upto
    return parts


@dataclass(frozen=True, slots=True)
class GPUInterval:
    """Billable GPU time of one instance while it was ready (``end`` None: still running)."""

    owner_id: str
    owner_username: str
    chute_id: str
    chute_name: str
    gpu_model: str | None
    gpu_count: int
    hourly_per_gpu: Decimal
    start: float
    end: float | None
    alloc_id: str = ""  # the usage row (or instance) it comes from


@dataclass(frozen=True, slots=True)
class CallCounts:
    """Invocations of one caller on one chute on one day."""

    day: int
    user_id: str
    chute_id: str
    calls: int
    errors: int
    duration_ms: float
    bytes_in: int
    bytes_out: int


@dataclass(slots=True)
class UsageLine:
    """One (day, user, chute) line of a usage report."""

    day: int
    user_id: str
    chute_id: str
    username: str = ""
    chute_name: str = ""
    invocations: int = 0
    errors: int = 0
    duration_ms: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    gpu_seconds: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)  # unrounded until ``finish``
    gpu_models: set[str] = field(default_factory=set)
    running: int = 0  # instances still running whose time up to ``now`` is included


def build_report(
    intervals: Iterable[GPUInterval],
    calls: Iterable[CallCounts],
    first_day: int,
    last_day: int,
    now: float,
) -> list[UsageLine]:
    """Usage lines for days ``first_day``..``last_day`` (inclusive), costs rounded to the cent per line.

    A running instance (``end`` None) counts up to ``now``.
    """
    lines: dict[tuple[int, str, str], UsageLine] = {}

    def line(day: int, user_id: str, chute_id: str) -> UsageLine:
        key = (day, user_id, chute_id)
        found = lines.get(key)
        if found is None:
            found = lines[key] = UsageLine(day, user_id, chute_id)
        return found

    for iv in intervals:
        end = now if iv.end is None else iv.end
        for day, seconds in split_by_day(iv.start, end):
            if first_day <= day <= last_day:
                ln = line(day, iv.owner_id, iv.chute_id)
                ln.username = ln.username or iv.owner_username
                ln.chute_name = ln.chute_name or iv.chute_name
                ln.gpu_seconds += seconds * iv.gpu_count
                ln.cost += gpu_cost(seconds, iv.gpu_count, iv.hourly_per_gpu)
                ln.gpu_models.add(iv.gpu_model or "unknown")
                if iv.end is None and day == epoch_day(end):
                    ln.running += 1
    for c in calls:
        if first_day <= c.day <= last_day:
            ln = line(c.day, c.user_id, c.chute_id)
            ln.invocations += c.calls
            ln.errors += c.errors
            ln.duration_ms += c.duration_ms
            ln.bytes_in += c.bytes_in
            ln.bytes_out += c.bytes_out
    for ln in lines.values():
        ln.cost = to_cents(ln.cost)
    return sorted(lines.values(), key=lambda ln: (ln.day, ln.username, ln.user_id, ln.chute_name, ln.chute_id))


# --- wire models ------------------------------------------------------------------------------------------


class InvocationRecord(BaseModel):
    """One invocation as a gateway reports it (docs/internal-contracts.md)."""

    model_config = ConfigDict(extra="ignore")

    invocation_id: str = Field(min_length=1, max_length=64)
    chute_id: str = Field(min_length=1, max_length=36)
    caller: str = Field(min_length=1, max_length=32)
    cord: str = Field("", max_length=128)
    status: int = Field(ge=100, le=599)
    # Upper bounds keep every value storable (BigInteger, the Integer day of started_at): past them a record
    # was a 500 instead of a 422.
    duration_ms: float = Field(ge=0, le=1e12, allow_inf_nan=False)
    bytes_in: int = Field(0, ge=0, le=2**62)
    bytes_out: int = Field(0, ge=0, le=2**62)
    started_at: float = Field(gt=0, le=253402300799, allow_inf_nan=False)  # up to 9999-12-31


class InvocationBatch(BaseModel):
    """A gateway's batch: invocation records, and (from gateways that report it) its utilisation snapshot."""

    model_config = ConfigDict(extra="forbid")

    records: list[InvocationRecord] = Field(max_length=10_000)
    utilisation: UtilisationReport | None = None


# --- recording --------------------------------------------------------------------------------------------


async def record_invocations(session: AsyncSession, records: Sequence[InvocationRecord], now: float) -> int:
    """Store invocation records; a record already stored (a gateway's retry) is ignored. Returns the batch size."""
    rows = [
        {
            "invocation_id": r.invocation_id,
            "chute_id": r.chute_id,
            "caller_id": r.caller,
            "cord": r.cord,
            "status": r.status,
            "duration_ms": r.duration_ms,
            "bytes_in": r.bytes_in,
            "bytes_out": r.bytes_out,
            "started_at": r.started_at,
            "day": epoch_day(r.started_at),
            "recorded_at": now,
        }
        for r in records
    ]
    for chunk in range(0, len(rows), 500):  # stay under SQLite's bound-parameter limit
        statement = upsert.insert(session, Invocation).values(rows[chunk : chunk + 500])
        await session.execute(statement.on_conflict_do_nothing(index_elements=["invocation_id"]))
    return len(rows)


def _price_for(instance: Instance, manifest: dict[str, Any]) -> tuple[Decimal, int]:
    """Hourly price per GPU and GPU count of an instance: its actual model, else the chute's cheapest eligible."""
    selector = manifest.get("node_selector") or {}
    count = instance.gpu_count or int(selector.get("gpu_count") or 1)
    price = hourly_price(instance.gpu_model)
    if price is None:
        eligible = [p for p in (hourly_price(g) for g in selector.get("eligible_gpus") or []) if p is not None]
        price = min(eligible) if eligible else Decimal(0)
        log.warning("instance %s of chute %s: GPU model %r not in the catalog; billed at %s/GPU/h",
                    instance.alloc_id, instance.chute_id, instance.gpu_model, price)  # fmt: skip
    return price, count


@dataclass
class SyncState:
    """What the metering loop remembers between ticks (in memory: a new leader rescans once)."""

    watermark: float = 0.0


def segment_end(start: float, inst: Instance | None, fallback: float) -> float | None:
    """When the billing segment of an instance that began at ``start`` (a ``ready_at``) ended; None: it runs.

    GPU time is billed while an instance is ready: a segment ends when the instance stops, or when it stops
    being ready while its allocation lives on (``unready_at``: a crash, a restart, a failing health check); a
    later ``ready_at`` starts a new segment. ``fallback`` is the end when nothing recorded says more (the
    instance record is gone: the last time it was seen).
    """
    if inst is None:
        return fallback
    if inst.ready_at is not None and inst.ready_at > start:  # ready again since: this segment ended between
        unready = inst.unready_at
        return unready if unready is not None and start <= unready <= inst.ready_at else inst.ready_at
    if inst.state == "ready":
        return None
    if inst.unready_at is not None and inst.unready_at >= start:
        return inst.unready_at
    if inst.state in TERMINAL_STATES and inst.stopped_at is not None:
        return max(start, inst.stopped_at)
    return fallback


def segment_id(alloc_id: str, first: InstanceUsage | None, ready_at: float) -> str:
    """The usage row id of the segment starting at ``ready_at``: the allocation id for its first segment
    (as before segments existed), ``<alloc id>/<microseconds>`` for the later ones."""
    if first is None or first.ready_at == ready_at:
        return alloc_id
    return f"{alloc_id}/{round(ready_at * 1_000_000)}"


def _base_id(usage_id: str) -> str:
    return usage_id.split("/", 1)[0]


async def _current_segment(session: AsyncSession, inst: Instance) -> tuple[str, InstanceUsage | None]:
    """(row id, row or None) of the segment of the instance's latest ready period."""
    assert inst.ready_at is not None
    first = await session.get(InstanceUsage, inst.alloc_id)
    sid = segment_id(inst.alloc_id, first, inst.ready_at)
    return sid, first if sid == inst.alloc_id else await session.get(InstanceUsage, sid)


async def sync_instance_usage(session: AsyncSession, now: float, state: SyncState) -> int:
    """Open, extend and close GPU-time rows from the scheduler's instance records; returns rows changed.

    An instance gets a row for each period it was ready (``segment_end``): opened from ``ready_at``, closed
    when it stopped or stopped being ready, or, when its record disappeared (its chute was deleted), at the
    last time it was seen running.
    """
    since = state.watermark
    query = select(Instance).where(
        Instance.ready_at.is_not(None),
        or_(Instance.state.not_in(TERMINAL_STATES), Instance.updated_at >= since),
    )
    instances = list((await session.execute(query)).scalars())
    open_rows = {
        _base_id(u.alloc_id): u
        for u in (await session.execute(select(InstanceUsage).where(InstanceUsage.stopped_at.is_(None)))).scalars()
    }
    chute_ids = {i.chute_id for i in instances}
    chutes = {c.id: c for c in (await session.execute(select(Chute).where(Chute.id.in_(chute_ids)))).scalars()}
    changed = 0
    for inst in instances:
        assert inst.ready_at is not None
        usage = open_rows.pop(inst.alloc_id, None)
        if usage is not None:
            end = segment_end(usage.ready_at, inst, usage.last_seen_at)
            if end is None:
                usage.last_seen_at = now
                continue
            usage.stopped_at = max(usage.ready_at, end)
            changed += 1
        sid, current = await _current_segment(session, inst)
        if current is not None:
            continue  # this ready period is billed already (open above, or closed before)
        chute = chutes.get(inst.chute_id)
        if chute is None:
            continue  # the chute is gone with its owner: nothing to bill to
        end = segment_end(inst.ready_at, inst, now)
        price, count = _price_for(inst, chute.manifest)
        session.add(
            InstanceUsage(
                alloc_id=sid,
                chute_id=inst.chute_id,
                chute_name=chute.name,
                owner_id=chute.owner_id,
                owner_username=chute.username,
                node_id=inst.node_id,
                gpu_model=inst.gpu_model,
                gpu_count=count,
                hourly_usd_per_gpu=price,
                ready_at=inst.ready_at,
                stopped_at=None if end is None else max(inst.ready_at, end),
                last_seen_at=now,
            )
        )
        await session.flush()
        changed += 1
    for usage in open_rows.values():  # open rows whose instance was not among the live or recent ones
        record = await session.get(Instance, _base_id(usage.alloc_id))
        if record is not None and record.state not in TERMINAL_STATES and record.ready_at == usage.ready_at:
            usage.last_seen_at = now  # live (perhaps not ready) and recorded above as the same period
            continue
        end = segment_end(usage.ready_at, record, usage.last_seen_at)
        usage.stopped_at = max(usage.ready_at, end if end is not None else usage.last_seen_at)
        changed += 1
    # Instances recorded while this tick ran carry earlier times: look back a little further next time.
    state.watermark = now - WATERMARK_SLACK
    return changed


async def live_intervals(
    session: AsyncSession, start: float, end: float, owner_id: str | None, chute_id: str | None, now: float
) -> list[GPUInterval]:
    """``intervals_for`` brought up to ``now`` from the instance records, without waiting for the metering loop:
    an open row whose instance has stopped being ready ends when it did, and an instance ready since the last
    metering tick counts from its ``ready_at``. Running intervals keep ``end`` None (counted up to now)."""
    stored = await intervals_for(session, start, end, owner_id, chute_id)
    open_ids = {iv.alloc_id for iv in stored if iv.end is None}
    records: dict[str, Instance] = {}
    if open_ids:
        query = select(Instance).where(Instance.alloc_id.in_({_base_id(a) for a in open_ids}))
        records = {i.alloc_id: i for i in (await session.execute(query)).scalars()}
    out: list[GPUInterval] = []
    billed: set[tuple[str, float]] = set()
    for iv in stored:
        billed.add((_base_id(iv.alloc_id), iv.start))
        if iv.end is None:
            stop = segment_end(iv.start, records.get(_base_id(iv.alloc_id)), now)
            iv = dataclasses.replace(iv, end=None if stop is None else max(iv.start, min(stop, now)))
        out.append(iv)
    ready = select(Instance, Chute).join(Chute, Chute.id == Instance.chute_id).where(Instance.state == "ready")
    if owner_id is not None:
        ready = ready.where(Chute.owner_id == owner_id)
    if chute_id is not None:
        ready = ready.where(Instance.chute_id == chute_id)
    for inst, chute in (await session.execute(ready)).all():
        if inst.ready_at is None or inst.ready_at >= end or (inst.alloc_id, inst.ready_at) in billed:
            continue
        price, count = _price_for(inst, chute.manifest)
        interval = GPUInterval(
            chute.owner_id, chute.username, inst.chute_id, chute.name, inst.gpu_model, count, price,
            inst.ready_at, None, inst.alloc_id,
        )  # fmt: skip
        out.append(interval)
    return out


async def intervals_for(
    session: AsyncSession, start: float, end: float, owner_id: str | None, chute_id: str | None
) -> list[GPUInterval]:
    query = select(InstanceUsage).where(
        InstanceUsage.ready_at < end, or_(InstanceUsage.stopped_at.is_(None), InstanceUsage.stopped_at > start)
    )
    if owner_id is not None:
        query = query.where(InstanceUsage.owner_id == owner_id)
    if chute_id is not None:
        query = query.where(InstanceUsage.chute_id == chute_id)
    return [
        GPUInterval(
            u.owner_id,
            u.owner_username,
            u.chute_id,
            u.chute_name,
            u.gpu_model,
            u.gpu_count,
            Decimal(u.hourly_usd_per_gpu),
            u.ready_at,
            u.stopped_at,
            u.alloc_id,
        )
        for u in (await session.execute(query)).scalars()
    ]


async def calls_for(
    session: AsyncSession, first_day: int, last_day: int, caller_id: str | None, chute_id: str | None
) -> list[CallCounts]:
    errors = func.sum(case((Invocation.status >= 400, 1), else_=0))
    query = select(
        Invocation.day,
        Invocation.caller_id,
        Invocation.chute_id,
        func.count(),
        errors,
        func.sum(Invocation.duration_ms),
        func.sum(Invocation.bytes_in),
        func.sum(Invocation.bytes_out),
    ).where(Invocation.day >= first_day, Invocation.day <= last_day)
    if caller_id is not None:
        query = query.where(Invocation.caller_id == caller_id)
    if chute_id is not None:
        query = query.where(Invocation.chute_id == chute_id)
    query = query.group_by(Invocation.day, Invocation.caller_id, Invocation.chute_id)
    return [
        CallCounts(int(d), u, c, int(n), int(e or 0), float(ms or 0), int(bi or 0), int(bo or 0))
        for d, u, c, n, e, ms, bi, bo in (await session.execute(query)).all()
    ]


# --- the leader loop ---------------------------------------------------------------------------------------


def leader_loops(services: Services) -> list[LeaderLoop]:
    """The metering loop: GPU-time rows from instance records, every ``CHUTES_METERING_INTERVAL`` seconds."""
    from chutes.scheduler.loops import LeaderLoop

    interval = services.config.metering_interval_s
    state = SyncState()

    async def tick() -> None:
        async with services.store.session() as session:
            changed = await sync_instance_usage(session, time.time(), state)
        if changed:
            log.info("metering: %d GPU-time records opened or closed", changed)

    return [LeaderLoop("metering", interval, tick, services.config.loop_max_backoff_s)]


def utc_date(t: float) -> date:
    return datetime.fromtimestamp(t, UTC).date()
