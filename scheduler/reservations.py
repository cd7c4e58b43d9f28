"""GPU reservations: what placement has promised but Nomad has not placed yet.

Placement reads the cluster (Consul inventories, Nomad allocations) and answers before Nomad has placed
anything, so two deploys deciding at the same time both saw the same free GPUs. Now the decision and the
promise are one critical section (``Store.lock``: one process after another, across schedulers): each
decision counts the GPUs still reserved by earlier ones as taken, and stores its own reservations before the
section ends. A reservation ends when an allocation of its chute created after it shows up (Nomad confirmed
the promise), when the deploy fails or the chute is deleted, or after ``ttl`` seconds at the latest.

A GPU can be counted twice for a moment (the allocation has appeared, its reservation is not confirmed yet):
placement may then refuse a deploy it could have taken, never promise a GPU twice.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.scheduler.placement import NodeState, Placement
from chutes.scheduler.placement.model import mark_in_use
from chutes.scheduler.store.control_models import GpuReservation

LOCK_NAME = "placement"
# Nomad's clock and ours may differ: an allocation created this much before a reservation still confirms it.
CLOCK_SLACK_S = 5.0


async def active(session: AsyncSession, now: float) -> list[GpuReservation]:
    """Reservations that have not expired, oldest first."""
    query = select(GpuReservation).where(GpuReservation.expires_at > now).order_by(GpuReservation.created_at)
    return list((await session.execute(query)).scalars())


def reserved_nodes(
    nodes: Mapping[str, NodeState], reservations: Iterable[GpuReservation], exclude_chute: str | None = None
) -> dict[str, NodeState]:
    """Only the nodes that hold reservations, with the reserved GPUs marked in use (node id -> new state)."""
    held: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in reservations:
        if r.chute_id != exclude_chute and r.node_id in nodes:
            held[r.node_id][r.model] += r.gpu_count
    return {
        node_id: dataclasses.replace(nodes[node_id], gpus=mark_in_use(nodes[node_id].gpus, counts_by_model=counts))
        for node_id, counts in held.items()
    }


async def reserve(
    session: AsyncSession, placements: Sequence[Placement], ttl_s: float, now: float | None = None
) -> list[str]:
    """Store one reservation per placement; returns their ids. Expired reservations are removed on the way."""
    now = time.time() if now is None else now
    await session.execute(delete(GpuReservation).where(GpuReservation.expires_at <= now))
    rows = [
        GpuReservation(
            chute_id=p.chute_id,
            node_id=p.node_id,
            model=p.model,
            gpu_count=len(p.gpu_uuids) or 1,
            created_at=now,
            expires_at=now + ttl_s,
        )
        for p in placements
    ]
    session.add_all(rows)
    await session.flush()
    return [r.id for r in rows]


async def release(session: AsyncSession, *, chute_id: str | None = None, ids: Sequence[str] = ()) -> int:
    """Drop reservations by id, or every one of a chute; returns how many went."""
    if ids:
        result = await session.execute(delete(GpuReservation).where(GpuReservation.id.in_(list(ids))))
    elif chute_id is not None:
        result = await session.execute(delete(GpuReservation).where(GpuReservation.chute_id == chute_id))
    else:
        return 0
    return int(getattr(result, "rowcount", 0) or 0)


async def confirm(session: AsyncSession, chute_id: str, allocations: Iterable[dict[str, Any]]) -> int:
    """Drop the chute's reservations that Nomad has honoured: one per live allocation created after it."""
    rows = list(
        (
            await session.execute(
                select(GpuReservation).where(GpuReservation.chute_id == chute_id).order_by(GpuReservation.created_at)
            )
        ).scalars()
    )
    if not rows:
        return 0
    created = sorted(
        (a.get("CreateTime") or 0) / 1e9
        for a in allocations
        if a.get("ClientStatus") in ("pending", "running") and a.get("DesiredStatus", "run") == "run"
    )
    done: list[str] = []
    for row in rows:
        match = next((i for i, t in enumerate(created) if t >= row.created_at - CLOCK_SLACK_S), None)
        if match is None:
            break
        del created[match]
        done.append(row.id)
    if done:
        await release(session, ids=done)
    return len(done)
