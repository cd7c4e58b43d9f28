"""Placement decisions: feasibility, then ranking, then selection, over a Cluster snapshot.

Ranking is lexicographic: the cheapest eligible model first, then the tightest fit (fewest free GPUs of that
model left on the node, so big nodes stay whole for big requests), then spread (fewer instances of the same
chute on the node), then the node id so that a decision is reproducible.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from chutes.scheduler.placement.cluster import Cluster, GPUGroup, GroupClass
from chutes.scheduler.placement.feasibility import (
    MODEL_CHECKS,
    class_outcome,
    enough_healthy,
    enough_vram,
    group_rejection,
)
from chutes.scheduler.placement.model import STAGES, NodeState, Placement, PlacementRequest, Reason, Unschedulable

_FEASIBLE = len(STAGES)  # the stage index of a node that passed every check
RankKey = tuple[float, int, int, str]


@dataclass(slots=True)
class Proposed:
    """Placements decided in this round and not yet in the snapshot, so that the next decision counts them."""

    taken: dict[tuple[str, str], int] = field(default_factory=dict)  # (node_id, model) -> GPUs taken
    instances: dict[str, int] = field(default_factory=dict)  # node_id -> instances of the chute added

    def add(self, placement: Placement) -> None:
        key = (placement.node_id, placement.model)
        self.taken[key] = self.taken.get(key, 0) + placement.gpu_count
        self.instances[placement.node_id] = self.instances.get(placement.node_id, 0) + 1


@dataclass(frozen=True, slots=True)
class PlacementPlan:
    """The result of placing several instances: those placed, and why the rest could not be."""

    placements: tuple[Placement, ...]
    unschedulable: Unschedulable | None

    @property
    def complete(self) -> bool:
        return self.unschedulable is None


def rank_key(price_per_gpu: float, free_after: int, instances: int, node_id: str) -> RankKey:
    """Smaller is better: cheapest model, tightest fit, fewest instances of the chute, then node id."""
    return (price_per_gpu, free_after, instances, node_id)


@dataclass(slots=True)
class _Decision:
    """The running state of one decision: counts by reason and the best candidate so far."""

    request: PlacementRequest
    proposed: Proposed
    counts: Counter[Reason]
    furthest: dict[str, int] = field(default_factory=dict)  # mixed node -> furthest stage any model reached
    feasible: int = 0
    best: tuple[RankKey, GPUGroup] | None = None

    def consider(self, key: RankKey, group: GPUGroup) -> None:
        if self.best is None or key < self.best[0]:
            self.best = (key, group)

    def instances(self, node: NodeState) -> int:
        return node.instances.get(self.request.chute_id, 0) + self.proposed.instances.get(node.node_id, 0)

    def reach(self, node_id: str, stage: int) -> None:
        if self.furthest.get(node_id, -1) < stage:
            self.furthest[node_id] = stage


def place(
    cluster: Cluster | Iterable[NodeState], request: PlacementRequest, proposed: Proposed | None = None
) -> Placement | Unschedulable:
    """The best node for one instance of ``request``, or why there is none (every node counted once)."""
    snapshot = cluster if isinstance(cluster, Cluster) else Cluster.build(cluster)
    proposed = proposed if proposed is not None else Proposed()
    decision = _Decision(request, proposed, Counter(snapshot.pre_rejected))
    for index in snapshot.models:
        failed = next((r for r, check in MODEL_CHECKS if not check(index.model, index.price_per_gpu, request)), None)
        if failed is not None:
            decision.counts[failed] += index.single_nodes
            for group in index.mixed:
                decision.reach(group.node.node_id, STAGES.index(failed))
            continue
        taken = {node_id: n for (node_id, model), n in proposed.taken.items() if model == index.model}
        for group_class in index.classes:
            _decide_class(decision, group_class, index.price_per_gpu, taken)
        for group in index.mixed:
            node_id = group.node.node_id
            free = len(group.free) - taken.get(node_id, 0)
            reason = group_rejection(group, free, request)
            if reason is None:
                key = rank_key(index.price_per_gpu, free - request.gpu_count, decision.instances(group.node), node_id)
                decision.consider(key, group)
            decision.reach(node_id, _FEASIBLE if reason is None else STAGES.index(reason))

    for stage in decision.furthest.values():
        if stage == _FEASIBLE:
            decision.feasible += 1
        else:
            decision.counts[STAGES[stage]] += 1
    rejections = {r: decision.counts[r] for r in STAGES if decision.counts[r]}
    if decision.best is None:
        return Unschedulable(chute_id=request.chute_id, nodes_total=snapshot.nodes_total, rejections=rejections)
    (price, free_after, _, _), group = decision.best
    already = proposed.taken.get((group.node.node_id, group.model), 0)
    return Placement(
        chute_id=request.chute_id,
        node_id=group.node.node_id,
        nomad_node_id=group.node.nomad_node_id,
        model=group.model,
        gpu_uuids=group.free[already : already + request.gpu_count],
        price_per_gpu=price,
        free_after=free_after,
        nodes_total=snapshot.nodes_total,
        nodes_feasible=decision.feasible,
        rejections=rejections,
    )


def _decide_class(decision: _Decision, group_class: GroupClass, price: float, taken: Mapping[str, int]) -> None:
    """Count a class's members in bulk, then rank its best member: the first node of the tightest bucket."""
    request = decision.request
    need = request.gpu_count
    outcome = class_outcome(group_class, request)
    decision.counts[Reason.LOW_VRAM] += outcome.low_vram
    decision.counts[Reason.TOO_FEW_GPUS] += outcome.too_few_gpus
    decision.counts[Reason.EXHAUSTED] += outcome.exhausted
    decision.feasible += outcome.feasible
    if not outcome.feasible:
        return  # proposals only take GPUs away: nothing in the class can fit
    # Members with proposals this round have fewer free GPUs than their bucket says: moved out and ranked alone.
    moved = {node_id: n for node_id, n in taken.items() if node_id in group_class.members}
    for node_id, n in moved.items():
        group = group_class.members[node_id]
        fits = enough_vram(group.vram_mib, request) and enough_healthy(group.healthy, request)
        if fits and len(group.free) >= need > len(group.free) - n:
            decision.feasible -= 1
            decision.counts[Reason.EXHAUSTED] += 1
        left = len(group.free) - n - need
        if left >= 0:
            decision.consider(rank_key(price, left, decision.instances(group.node), node_id), group)
    for free in range(need, len(group_class.by_free)):
        chosen: tuple[int, GPUGroup] | None = None
        for group in group_class.by_free[free]:  # sorted by node id: the first of the fewest instances wins
            if group.node.node_id in moved:
                continue
            instances = group.node.instances.get(request.chute_id, 0)
            if chosen is None or instances < chosen[0]:
                chosen = (instances, group)
                if instances == 0:
                    break
        if chosen is not None:
            decision.consider(rank_key(price, free - need, chosen[0], chosen[1].node.node_id), chosen[1])
            return


def place_many(cluster: Cluster | Iterable[NodeState], request: PlacementRequest, count: int) -> PlacementPlan:
    """Place ``count`` instances one after another, each decision seeing the GPUs the previous ones took."""
    snapshot = cluster if isinstance(cluster, Cluster) else Cluster.build(cluster)
    proposed = Proposed()
    placements: list[Placement] = []
    for _ in range(count):
        result = place(snapshot, request, proposed)
        if isinstance(result, Unschedulable):
            return PlacementPlan(tuple(placements), result)
        placements.append(result)
        proposed.add(result)
    return PlacementPlan(tuple(placements), None)
