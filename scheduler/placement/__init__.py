"""Placement: which node, GPU model and GPUs an instance of a chute gets, explainably (pure, no I/O).

Shaped like Nomad's scheduler: feasibility checks (``feasibility``), then ranking and selection
(``select``), over a snapshot of the cluster indexed by GPU model (``cluster``). Every rejected node is
counted under one reason, so a failed placement explains itself.
"""

from chutes.scheduler.placement.cluster import Cluster, GPUGroup
from chutes.scheduler.placement.model import (
    GPU,
    NodeState,
    Placement,
    PlacementRequest,
    PlacementResult,
    Reason,
    Unschedulable,
    mark_in_use,
    min_vram_mib,
)
from chutes.scheduler.placement.select import PlacementPlan, Proposed, place, place_many, rank_key

__all__ = [
    "GPU",
    "Cluster",
    "GPUGroup",
    "NodeState",
    "Placement",
    "PlacementPlan",
    "PlacementRequest",
    "PlacementResult",
    "Proposed",
    "Reason",
    "Unschedulable",
    "mark_in_use",
    "min_vram_mib",
    "place",
    "place_many",
    "rank_key",
]
