"""The recorder: stores what a cluster view snapshot says a chute's instances are doing.

Only the leader's reconciler and the deploy watch call it; API reads never do (they answer from the store
and the view). It records each allocation's state (one row per allocation, compare-and-set, so a transition
is announced once as an event even when two observers see it), confirms the GPU reservations Nomad honoured,
and keeps the chute's status in step with its instances: it is the one writer of an observed status.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from chutes.scheduler import reservations
from chutes.scheduler.cluster_view import ViewSnapshot
from chutes.scheduler.instance_states import InstanceView, chute_status, instance_views
from chutes.scheduler.services import Services
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import instances as instances_repo
from chutes.scheduler.store.instances import TERMINAL, Observed, Transition
from chutes.scheduler.store.models import Chute


def event_for(t: Transition, view: InstanceView) -> tuple[str, str] | None:
    """(kind, message) of the event that announces a transition, if it is one users are told about."""
    short = view.alloc_id[:8]
    where = view.node_id or "?"
    if t.new == "running":
        return "running", f"instance {short} running on {where}"
    if t.new == "ready":
        return "ready", f"instance {short} ready on {where} (passing in Consul)"
    if t.new == "failed":
        return "failed", f"instance {short} on {where} failed: {view.message or 'no message'}"
    if t.new == "failing":
        return "failed", f"instance {short} on {where} is failing: {view.message or 'no message'}"
    if t.new == "lost":
        return "failed", f"instance {short} on {where} was lost (node down?)"
    if t.new == "stopped":
        return "stopped", f"instance {short} on {where} stopped"
    return None


def _view_data(view: InstanceView) -> dict[str, Any]:
    return {"instance_id": view.alloc_id, "node_id": view.node_id, "gpu_model": view.gpu_model,
            "gpu_count": view.gpu_count, "state": view.state}  # fmt: skip


def observations(chute: Chute, view: InstanceView) -> list[Observed]:
    """What to record of one instance: its state now, preceded by ``running`` when it stopped serving since it
    was last recorded ready (a restart seen only afterwards) so that billing stops then."""
    obs = Observed(
        view.alloc_id, chute.id, view.version, view.state, node_id=view.node_id, nomad_node_id=view.nomad_node_id,
        gpu_model=view.gpu_model, gpu_count=view.gpu_count, at=view.left_at if view.state != "ready" else None,
    )  # fmt: skip
    if view.state == "ready" and view.left_at is not None:
        return [dataclasses.replace(obs, state="running", at=view.left_at), obs]
    return [obs]


async def record_chute(services: Services, chute: Chute, snapshot: ViewSnapshot) -> list[InstanceView]:
    """Record the chute's instances as ``snapshot`` shows them; returns them."""
    allocs = snapshot.allocations_of(chute.id)
    async with services.store.session() as session:
        known = {i.alloc_id: i for i in await instances_repo.list_for(session, chute.id)}
        await reservations.confirm(session, chute.id, [dict(a) for a in allocs])  # Nomad placed them
    views = instance_views(chute, allocs, snapshot.health, snapshot.inventories, known.values())
    changes: list[tuple[Transition, InstanceView]] = []
    for view in views:
        for obs in observations(chute, view):
            async with services.store.session() as session:
                t = await instances_repo.record(session, obs)
            if t is not None:
                changes.append((t, dataclasses.replace(view, state=obs.state)))
    # Records of allocations Nomad no longer lists (job purged, garbage-collected) end here.
    listed = {v.alloc_id for v in views}
    for alloc_id, row in known.items():
        if alloc_id not in listed and row.state not in TERMINAL:
            async with services.store.session() as session:
                t = await instances_repo.record(session, Observed(alloc_id, chute.id, row.version, "stopped"))
            if t is not None:
                changes.append((t, InstanceView(alloc_id, "stopped", False, row.node_id, row.nomad_node_id,
                                                row.gpu_model, row.gpu_count, (), None, None, None, None,
                                                row.version, row.created_at)))  # fmt: skip
    for t, view in changes:
        if t.old is None:
            what = f"{view.gpu_count}× {view.gpu_model or 'GPU'}" if view.gpu_count else "no GPU"
            await services.events.record(
                chute.id, "placed", f"instance {view.alloc_id[:8]} placed on node {view.node_id} with {what}",
                version=view.version, data=_view_data(view),
            )  # fmt: skip
        event = event_for(t, view)
        if event is not None and not (t.old is None and t.new == "pending"):
            await services.events.record(chute.id, event[0], event[1], version=view.version, data=_view_data(view))
    await _record_status(services, chute, views)
    return views


async def _record_status(services: Services, chute: Chute, views: list[InstanceView]) -> None:
    status = chute_status(views, chute.desired_instances)
    if status is None:
        return  # nothing placed yet: keep what the deploy or the reconciler said (registered, unschedulable)
    async with services.store.session() as session:
        row = await chutes_repo.get_chute(session, chute.id)
        if row is not None and row.status != "deleting" and (row.status, row.status_detail) != status:
            row.status, row.status_detail = status


async def record_gone(services: Services, chute_id: str) -> None:
    """Mark every live instance record of a chute as stopped (its jobs were purged)."""
    async with services.store.session() as session:
        rows = await instances_repo.list_for(session, chute_id, live_only=True)
    for row in rows:
        async with services.store.session() as session:
            await instances_repo.record(session, Observed(row.alloc_id, chute_id, row.version, "stopped"))
