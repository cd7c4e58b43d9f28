"""What the dashboard shows beyond the plain API answers, computed without I/O.

- ``node_verdicts``: for a chosen chute, whether one more instance could be placed on each node now, and if
  not, the first placement check the node fails (the same pipeline, reasons and hints as a deploy's 409).
- ``gpu_holders``: which instance (Nomad allocation) holds each GPU, from the allocations' device IDs.
- ``running_cost``: what a running instance has cost since it became ready, at its billed rate.
- ``usage_by_model``: GPU time and cost per GPU model (the usage report has them per chute and day).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from chutes.scheduler.inventory_reader import chute_of_job, is_active
from chutes.scheduler.metering import GPUInterval, gpu_cost, split_by_day, to_cents
from chutes.scheduler.placement import NodeState, Placement, PlacementRequest, Reason, place


@dataclass(frozen=True, slots=True)
class NodeVerdict:
    """Whether one more instance of a chute fits on one node, and why (not)."""

    node_id: str
    fits: bool
    reason: str | None  # a placement Reason's value, None when it fits
    label: str
    hint: str | None
    gpu_model: str | None = None
    gpu_uuids: tuple[str, ...] = ()
    price_per_gpu: float | None = None


def node_verdicts(nodes: Iterable[NodeState], request: PlacementRequest) -> list[NodeVerdict]:
    """One verdict per node: placement asked about that node alone (rejections name the node's one reason)."""
    out = []
    for node in nodes:
        result = place([node], request)
        if isinstance(result, Placement):
            label = f"fits: {result.gpu_count}x {result.model} at ${result.price_per_gpu:.2f}/GPU/h"
            out.append(
                NodeVerdict(node.node_id, True, None, label, None, result.model, result.gpu_uuids, result.price_per_gpu)
            )
            continue
        reason = next((r for r, n in result.rejections.items() if n), Reason.NOT_ALIVE)
        out.append(NodeVerdict(node.node_id, False, reason.value, reason.label, reason.hint))
    return out


@dataclass(frozen=True, slots=True)
class Holder:
    """The allocation that holds a GPU."""

    instance_id: str
    chute_id: str | None  # None for a job that is not a chute's service job (e.g. a batch job run)
    job_id: str


def gpu_holders(allocations: Iterable[Mapping[str, Any]]) -> dict[str, Holder]:
    """GPU device ID → the active allocation holding it (Nomad's ``AllocatedResources`` device IDs)."""
    held: dict[str, Holder] = {}
    for alloc in allocations:
        if not is_active(alloc):
            continue
        job_id = str(alloc.get("JobID") or "")
        chute_id = chute_of_job(job_id) or chute_of_job(job_id.split("-job-", 1)[0])  # a service job or a job run
        for resources in ((alloc.get("AllocatedResources") or {}).get("Tasks") or {}).values():
            for device in (resources or {}).get("Devices") or []:
                if (device.get("Type") or "gpu") != "gpu":
                    continue
                for uuid in device.get("DeviceIDs") or []:
                    held[str(uuid)] = Holder(str(alloc.get("ID") or ""), chute_id, job_id)
    return held


def running_cost(ready_at: float, now: float, gpu_count: int, hourly_usd_per_gpu: Decimal) -> Decimal:
    """The cost so far of an instance ready since ``ready_at`` (USD, unrounded to the cent, never negative)."""
    seconds = Decimal(str(max(0.0, now - ready_at)))
    return (seconds * gpu_count * hourly_usd_per_gpu / 3600).quantize(Decimal("0.000001"))


@dataclass(slots=True)
class ModelUsage:
    """GPU time and its cost for one GPU model over a range of days."""

    gpu_model: str
    gpu_seconds: Decimal = Decimal(0)
    cost_usd: Decimal = Decimal(0)


def usage_by_model(intervals: Iterable[GPUInterval], first_day: int, last_day: int, now: float) -> list[ModelUsage]:
    """GPU-seconds and cost per GPU model within the days ``first_day``..``last_day`` (the same exact split by
    UTC day as the usage report, so the per-model figures add up to its GPU time)."""
    by_model: dict[str, ModelUsage] = {}
    for iv in intervals:
        end = now if iv.end is None else iv.end
        model = iv.gpu_model or "unknown"
        for day, seconds in split_by_day(iv.start, end):
            if first_day <= day <= last_day:
                row = by_model.setdefault(model, ModelUsage(model))
                row.gpu_seconds += seconds * iv.gpu_count
                row.cost_usd += gpu_cost(seconds, iv.gpu_count, iv.hourly_per_gpu)
    for row in by_model.values():
        row.cost_usd = to_cents(row.cost_usd)
        row.gpu_seconds = row.gpu_seconds.quantize(Decimal("0.001"))
    return sorted(by_model.values(), key=lambda r: (-r.cost_usd, r.gpu_model))
