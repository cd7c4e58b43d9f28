"""What a chute's instances are doing, from a cluster view snapshot and their records (pure, no I/O).

One allocation of the chute's Nomad job is one instance. Its state comes from Nomad (client status, task
events) joined with Consul (its service entry passes ``/_ready``); its node and GPU model come from the
allocation's devices and the node's inventory in the same snapshot. The API shows these views as they are;
the recorder (``recorder``) stores their changes. Both derive the chute's status with ``chute_status``, so
what a GET shows and what the recorder stores cannot disagree about the same snapshot.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chutes import gpus
from chutes.core.inventory import NodeInventory
from chutes.scheduler import task_events
from chutes.scheduler.nomad_api import allocation_gpu_ids
from chutes.scheduler.runs import last_task_message
from chutes.scheduler.store.instances import TERMINAL
from chutes.scheduler.store.models import Chute, Instance

PORT_LABEL = "http"
_CLIENT_STATES = {"pending": "pending", "complete": "stopped", "failed": "failed", "lost": "lost"}


@dataclass(frozen=True)
class InstanceView:
    """One allocation of a chute as the API shows it."""

    alloc_id: str
    state: str
    healthy: bool
    node_id: str | None
    nomad_node_id: str | None
    gpu_model: str | None
    gpu_count: int
    gpu_uuids: tuple[str, ...]
    desired_status: str | None
    client_status: str | None
    address: str | None
    port: int | None
    version: str | None
    created_at: float | None
    message: str = ""
    # When it stopped serving, if it was recorded ready and its task ended or restarted since (task events).
    left_at: float | None = None


def instance_state(alloc: Mapping[str, Any], healthy: bool) -> str:
    """pending, running (not passing yet), ready (passing in Consul), stopped, failed or lost."""
    status = alloc.get("ClientStatus") or "pending"
    if status == "running":
        return "ready" if healthy else "running"
    return _CLIENT_STATES.get(status, "pending")


def assess(alloc: Mapping[str, Any], healthy: bool, row: Instance | None) -> tuple[str, str, float | None]:
    """(state, message, when it stopped serving) of an allocation, from Nomad, Consul and its last record.

    A live allocation that is not ready and whose task failed since it was last ready is ``failing``, with
    Nomad's reason. An instance recorded ready whose task ended or restarted since stopped serving at that
    moment (task events), not when this observation happens to see it.
    """
    state = instance_state(alloc, healthy)
    since = row.ready_at if row is not None and row.ready_at is not None else 0.0
    message = ""
    if state in ("running", "pending"):
        found = task_events.trouble(alloc, since)
        if found is not None:
            state, message = "failing", found.message
    elif state in TERMINAL:
        message = last_task_message(dict(alloc))
    left_at: float | None = None
    if row is not None and row.state == "ready" and row.ready_at is not None:
        # Event times come from Nomad's clock: only events clearly after the recorded ready time count.
        ended = task_events.stopped_serving(alloc, row.ready_at + task_events.CLOCK_SLACK_S)
        if ended is not None:
            left_at = min(max(ended, row.ready_at), time.time())
    return state, message, left_at


def gpu_model_of(alloc: Mapping[str, Any], uuids: Iterable[str], inventory: NodeInventory | None) -> str | None:
    """The catalog model of the allocation's GPUs: by UUID in its node's inventory, else by Nomad's device name."""
    uuids = list(uuids)
    if inventory is not None:
        by_uuid = {g.uuid: g.model for g in inventory.gpus}
        models = Counter(m for u in uuids if (m := by_uuid.get(u)))
        if models:
            return models.most_common(1)[0][0]
    for resources in ((alloc.get("AllocatedResources") or {}).get("Tasks") or {}).values():
        for device in (resources or {}).get("Devices") or []:
            model = gpus.identify(device.get("Name") or "")
            if model is not None:
                return model
    return None


def address_of(alloc: Mapping[str, Any], label: str = PORT_LABEL) -> tuple[str | None, int | None]:
    """(host address, port) Nomad gave the allocation for ``label``."""
    shared = (alloc.get("AllocatedResources") or {}).get("Shared") or {}
    for port in shared.get("Ports") or []:
        if port.get("Label") == label:
            return port.get("HostIP") or None, int(port["Value"])
    for network in shared.get("Networks") or []:
        for port in (network.get("DynamicPorts") or []) + (network.get("ReservedPorts") or []):
            if port.get("Label") == label:
                return network.get("IP") or None, int(port["Value"])
    return None, None


def instance_views(
    chute: Chute,
    allocations: Iterable[Mapping[str, Any]],
    health: Mapping[str, bool],
    inventories: Mapping[str, NodeInventory],
    rows: Iterable[Instance] = (),
) -> list[InstanceView]:
    """The chute's instances: each allocation joined with its Consul health, node inventory and record."""
    known = {r.alloc_id: r for r in rows}
    out = []
    for alloc in allocations:
        alloc_id = str(alloc["ID"])
        healthy = health.get(alloc_id, False)
        row = known.get(alloc_id)
        state, message, left_at = assess(alloc, healthy, row)
        uuids = tuple(allocation_gpu_ids(alloc))
        node_id = alloc.get("NodeName") or (row.node_id if row else None)
        model = gpu_model_of(alloc, uuids, inventories.get(node_id or "")) or (row.gpu_model if row else None)
        address, port = address_of(alloc)
        out.append(
            InstanceView(
                alloc_id=alloc_id, state=state, healthy=healthy, node_id=node_id,
                nomad_node_id=alloc.get("NodeID") or (row.nomad_node_id if row else None), gpu_model=model,
                gpu_count=len(uuids) or (row.gpu_count if row else 0), gpu_uuids=uuids,
                desired_status=alloc.get("DesiredStatus"), client_status=alloc.get("ClientStatus"),
                address=address, port=port, version=row.version if row else chute.version,
                created_at=(alloc.get("CreateTime") or 0) / 1e9 or None, message=message, left_at=left_at,
            )
        )  # fmt: skip
    return out


def chute_status(views: Iterable[InstanceView], desired: int) -> tuple[str, str] | None:
    """(status, detail) of a chute from its instances; None when nothing is placed yet (the deploy's or the
    reconciler's word stands: registered, unschedulable)."""
    live = [v for v in views if v.state not in TERMINAL]
    states = Counter(v.state for v in live)
    failing = next((v for v in live if v.state == "failing"), None)
    if states["ready"]:
        detail = f"{states['ready']} of {desired} instances ready"
        if failing is not None:
            detail += f"; {states['failing']} failing: {failing.message}"
        return "ready", detail
    if failing is not None:
        return "failing", f"{states['failing']} instance(s) failing: {failing.message}"
    if states["running"]:
        return "running", "starting: waiting for /_ready"
    if states["pending"]:
        return "deploying", "instances pending"
    if desired == 0:
        return "idle", "scaled to zero"
    return None
