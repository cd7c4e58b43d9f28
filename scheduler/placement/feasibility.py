"""Feasibility checks, in the order a node meets them; each failing node is counted under one Reason.

Three levels, as in Nomad's stack:
- node checks do not depend on the request: applied once per snapshot (``Cluster.build``);
- model checks depend on the request and a GPU model only: applied once per model per decision;
- group checks look at one node's GPUs of one model. A node with a single model belongs to a ``GroupClass``
  (same model and per-GPU memory), whose members are checked in bulk from its histograms, the way Nomad
  caches feasibility per computed node class; nodes with several models are checked one group at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from chutes.scheduler.placement.model import NodeState, PlacementRequest, Reason

if TYPE_CHECKING:
    from chutes.scheduler.placement.cluster import GPUGroup, GroupClass


def agent_alive(node: NodeState) -> bool:
    """The node's chutes-agent check is passing: its inventory is fresh and its GPUs are watched."""
    return node.alive


def nomad_eligible(node: NodeState) -> bool:
    """Nomad may place work on the node (not draining, not marked ineligible)."""
    return node.eligible


def model_eligible(model: str, price_per_gpu: float, request: PlacementRequest) -> bool:
    """The model is one of the chute's eligible GPUs (NodeSelector include/exclude/VRAM/price, resolved)."""
    return model in request.eligible_gpus


def within_price_cap(model: str, price_per_gpu: float, request: PlacementRequest) -> bool:
    """The model's hourly price per GPU is at or below the chute's cap, when it has one."""
    return request.max_price_per_gpu is None or price_per_gpu <= request.max_price_per_gpu


def enough_vram(vram_mib: int, request: PlacementRequest) -> bool:
    """Each GPU has at least the requested memory (the device block's ``${device.attr.memory}`` constraint)."""
    return vram_mib >= request.min_vram_mib


def enough_healthy(healthy: int, request: PlacementRequest) -> bool:
    """The node has enough healthy GPUs of the model to fit the request when idle."""
    return healthy >= request.gpu_count


def enough_free(free: int, request: PlacementRequest) -> bool:
    """Enough of them are free now (no allocation holds them, counting this round's proposals)."""
    return free >= request.gpu_count


NODE_CHECKS: tuple[tuple[Reason, Callable[[NodeState], bool]], ...] = (
    (Reason.NOT_ALIVE, agent_alive),
    (Reason.INELIGIBLE, nomad_eligible),
)
# Between the node and the model checks, the snapshot counts nodes without any usable GPU (Reason.NO_GPUS).
MODEL_CHECKS: tuple[tuple[Reason, Callable[[str, float, PlacementRequest], bool]], ...] = (
    (Reason.WRONG_MODEL, model_eligible),
    (Reason.OVER_PRICE, within_price_cap),
)


def group_rejection(group: GPUGroup, free: int, request: PlacementRequest) -> Reason | None:
    """The first group check that ``group`` (with ``free`` GPUs free) fails, or None when it fits."""
    if not enough_vram(group.vram_mib, request):
        return Reason.LOW_VRAM
    if not enough_healthy(group.healthy, request):
        return Reason.TOO_FEW_GPUS
    if not enough_free(free, request):
        return Reason.EXHAUSTED
    return None


class ClassOutcome(NamedTuple):
    low_vram: int
    too_few_gpus: int
    exhausted: int
    feasible: int


def class_outcome(group_class: GroupClass, request: PlacementRequest) -> ClassOutcome:
    """``group_rejection`` applied to every member of ``group_class`` at once (snapshot values, no proposals).

    Members share the model and per-GPU memory, so the VRAM check holds for all or none; the GPU-count checks
    are thresholds, answered by the class's cumulative histograms of healthy and free GPUs.
    """
    if not enough_vram(group_class.vram_mib, request):
        return ClassOutcome(group_class.size, 0, 0, 0)
    too_few = group_class.healthy_below(request.gpu_count)
    not_free = group_class.free_below(request.gpu_count)  # free <= healthy: includes every too_few member
    return ClassOutcome(0, too_few, not_free - too_few, group_class.size - not_free)
