"""Recorded instance state: one row per Nomad allocation, updated only on a change of state.

``record`` returns the transition it made, or None when the state was already recorded, so that each
transition is announced once even when the deploy watch and the reconciler (or two schedulers) observe it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.scheduler.store.base import now
from chutes.scheduler.store.models import Instance

TERMINAL = frozenset({"stopped", "failed", "lost"})


@dataclass(frozen=True, slots=True)
class Observed:
    alloc_id: str
    chute_id: str
    version: str | None
    state: str
    node_id: str | None = None
    nomad_node_id: str | None = None
    gpu_model: str | None = None
    gpu_count: int = 0
    # When the state began, if known better than "now" (from Nomad's task events); stamps use it.
    at: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    alloc_id: str
    old: str | None  # None: first time this allocation is seen
    new: str


def _stamps(state: str, t: float) -> dict[str, float]:
    if state == "running":
        return {"started_at": t}
    if state == "ready":
        return {"ready_at": t}
    if state in TERMINAL:
        return {"stopped_at": t}
    return {}


async def record(session: AsyncSession, obs: Observed) -> Transition | None:
    t = now() if obs.at is None else obs.at
    row = await session.get(Instance, obs.alloc_id, populate_existing=True)
    if row is None:
        try:
            async with session.begin_nested():
                session.add(
                    Instance(
                        alloc_id=obs.alloc_id,
                        chute_id=obs.chute_id,
                        version=obs.version,
                        node_id=obs.node_id,
                        nomad_node_id=obs.nomad_node_id,
                        gpu_model=obs.gpu_model,
                        gpu_count=obs.gpu_count,
                        state=obs.state,
                        created_at=t,
                        updated_at=t,
                        **_stamps(obs.state, t),
                    )
                )
            return Transition(obs.alloc_id, None, obs.state)
        except IntegrityError:
            row = await session.get(Instance, obs.alloc_id, populate_existing=True)
            if row is None:
                return None
    if row.state == obs.state:
        return None
    old = row.state
    values: dict[str, object] = {"state": obs.state, "updated_at": now(), **_stamps(obs.state, t)}
    if old == "ready" and obs.state not in TERMINAL:
        values["unready_at"] = t  # alive but no longer serving: GPU time stops being billed here
    for field in ("node_id", "nomad_node_id", "gpu_model"):
        if getattr(obs, field) is not None:
            values[field] = getattr(obs, field)
    if obs.gpu_count:
        values["gpu_count"] = obs.gpu_count
    # Compare-and-set on the old state: exactly one observer wins each transition.
    result = await session.execute(
        update(Instance)
        .where(Instance.alloc_id == obs.alloc_id, Instance.state == old)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    return Transition(obs.alloc_id, old, obs.state)


async def list_for(session: AsyncSession, chute_id: str, *, live_only: bool = False) -> list[Instance]:
    query = select(Instance).where(Instance.chute_id == chute_id)
    if live_only:
        query = query.where(Instance.state.not_in(TERMINAL))
    return list((await session.execute(query.order_by(Instance.created_at))).scalars())


async def list_for_many(session: AsyncSession, chute_ids: Sequence[str]) -> dict[str, list[Instance]]:
    """The instance rows of several chutes in one query: chute id → rows, oldest first."""
    if not chute_ids:
        return {}
    query = select(Instance).where(Instance.chute_id.in_(list(chute_ids))).order_by(Instance.created_at)
    out: dict[str, list[Instance]] = {}
    for row in (await session.execute(query)).scalars():
        out.setdefault(row.chute_id, []).append(row)
    return out
