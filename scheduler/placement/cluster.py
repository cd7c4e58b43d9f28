"""A snapshot of the cluster, indexed for placement.

Built once per inventory refresh (O(nodes)) and shared by every decision until the next one:
- the checks that do not depend on the request (agent alive, Nomad eligibility, usable GPUs) are applied
  here, once;
- each remaining node is split into GPU groups (one per catalog model on the node), indexed by model;
- nodes with a single model are gathered into classes of the same model and per-GPU memory (Nomad's
  "computed node class"), with histograms of healthy and free GPUs and buckets by free count, so that a
  decision counts and ranks a whole class in a few steps instead of visiting each node.

A decision that sees a few nodes differently (GPUs reserved by earlier decisions, or freed because a new
version replaces the chute's own instances) derives its snapshot with ``with_nodes``: only the classes those
nodes belong to are rebuilt, so it costs O(class size), not O(nodes).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from chutes import gpus
from chutes.scheduler.placement.feasibility import NODE_CHECKS
from chutes.scheduler.placement.model import GPU, NodeState, Reason


@dataclass(frozen=True, slots=True)
class GPUGroup:
    """The GPUs of one catalog model on one node: what a single Nomad device request is served from."""

    node: NodeState
    model: str
    vram_mib: int  # the smallest memory among the group's healthy GPUs (all of them, if none is healthy)
    healthy: int  # healthy GPUs, in use or not
    free: tuple[str, ...]  # UUIDs of the healthy GPUs no allocation holds, in index order


@dataclass(frozen=True, slots=True)
class GroupClass:
    """The groups of single-model nodes that share a model and per-GPU memory."""

    model: str
    vram_mib: int
    by_free: tuple[tuple[GPUGroup, ...], ...]  # by_free[f]: members with exactly f free GPUs, by node id
    members: Mapping[str, GPUGroup]  # node_id -> group
    _healthy_below: tuple[int, ...]  # [k]: members with fewer than k healthy GPUs
    _free_below: tuple[int, ...]  # [k]: members with fewer than k free GPUs

    @classmethod
    def of(cls, model: str, vram_mib: int, groups: list[GPUGroup]) -> GroupClass:
        groups = sorted(groups, key=lambda g: g.node.node_id)
        top = max(max(g.healthy for g in groups), max(len(g.free) for g in groups))
        buckets: list[list[GPUGroup]] = [[] for _ in range(top + 1)]
        healthy = sorted(g.healthy for g in groups)
        free = sorted(len(g.free) for g in groups)
        for group in groups:
            buckets[len(group.free)].append(group)
        return cls(
            model=model,
            vram_mib=vram_mib,
            by_free=tuple(tuple(b) for b in buckets),
            members={g.node.node_id: g for g in groups},
            _healthy_below=tuple(bisect_left(healthy, k) for k in range(top + 2)),
            _free_below=tuple(bisect_left(free, k) for k in range(top + 2)),
        )

    def replaced(self, groups: Mapping[str, GPUGroup]) -> GroupClass:
        """This class with some members' groups replaced by ones with the same healthy GPUs (only which are
        free differs): each moves between two buckets, O(bucket) instead of rebuilding the class."""
        buckets = [list(b) for b in self.by_free]
        for node_id, new in groups.items():
            old = self.members[node_id]
            bucket = buckets[len(old.free)]
            del bucket[bisect_left(bucket, node_id, key=_node_id)]
            target = buckets[len(new.free)]
            target.insert(bisect_left(target, node_id, key=_node_id), new)
        below = [0]
        for bucket in buckets:
            below.append(below[-1] + len(bucket))
        return replace(
            self,
            by_free=tuple(tuple(b) for b in buckets),
            members={**self.members, **groups},
            _free_below=tuple(below),
        )

    @property
    def size(self) -> int:
        return len(self.members)

    def healthy_below(self, k: int) -> int:
        """How many members have fewer than ``k`` healthy GPUs."""
        return self._healthy_below[min(k, len(self._healthy_below) - 1)]

    def free_below(self, k: int) -> int:
        """How many members have fewer than ``k`` free GPUs."""
        return self._free_below[min(k, len(self._free_below) - 1)]


@dataclass(frozen=True, slots=True)
class ModelIndex:
    """Everything one GPU model offers: classes of single-model nodes and groups on mixed nodes."""

    model: str
    price_per_gpu: float
    classes: tuple[GroupClass, ...]
    mixed: tuple[GPUGroup, ...]  # groups on nodes that also have another model: merged per node

    @property
    def single_nodes(self) -> int:
        return sum(c.size for c in self.classes)


@dataclass(frozen=True, slots=True)
class Cluster:
    """Every node, with the request-independent rejections counted and the rest indexed by GPU model."""

    nodes_total: int
    pre_rejected: Mapping[Reason, int]
    models: tuple[ModelIndex, ...]  # cheapest first
    nodes: Mapping[str, NodeState] = field(default_factory=dict)  # node_id -> state, as built
    prices: Mapping[str, float] = field(default_factory=dict)  # catalog id -> hourly USD per GPU, as built

    @classmethod
    def build(cls, nodes: Iterable[NodeState], prices: Mapping[str, float] | None = None) -> Cluster:
        """Index ``nodes``; ``prices`` (catalog id → hourly USD per GPU) defaults to the catalog's."""
        price_of = dict(prices) if prices is not None else {g.id: g.hourly_usd for g in gpus.CATALOG.values()}
        rejected: Counter[Reason] = Counter()
        single: dict[tuple[str, int], list[GPUGroup]] = {}
        mixed: dict[str, list[GPUGroup]] = {}
        total = 0
        seen: set[str] = set()
        all_nodes = list(nodes)
        for node in all_nodes:
            total += 1
            if node.node_id in seen:
                raise ValueError(f"node {node.node_id!r} appears twice in the inventory")
            seen.add(node.node_id)
            failed = _pre_check(node)
            if failed is not None:
                rejected[failed] += 1
                continue
            groups = _groups(node, price_of)
            if not groups:
                rejected[Reason.NO_GPUS] += 1
            elif len(groups) == 1:
                single.setdefault((groups[0].model, groups[0].vram_mib), []).append(groups[0])
            else:
                for group in groups:
                    mixed.setdefault(group.model, []).append(group)
        classes: dict[str, list[GroupClass]] = {}
        for (model, vram_mib), members in single.items():
            classes.setdefault(model, []).append(GroupClass.of(model, vram_mib, members))
        models = tuple(
            sorted(
                (
                    ModelIndex(
                        model=m,
                        price_per_gpu=price_of[m],
                        classes=tuple(sorted(classes.get(m, ()), key=lambda c: c.vram_mib)),
                        mixed=tuple(sorted(mixed.get(m, ()), key=lambda g: g.node.node_id)),
                    )
                    for m in sorted(set(classes) | set(mixed))
                ),
                key=lambda index: (index.price_per_gpu, index.model),
            )
        )
        return cls(
            nodes_total=total,
            pre_rejected=dict(rejected),
            models=models,
            nodes={n.node_id: n for n in all_nodes},
            prices=price_of,
        )

    def with_nodes(self, changed: Iterable[NodeState]) -> Cluster:
        """This snapshot with some nodes in another state; equal to ``Cluster.build`` of every node.

        When only which GPUs are free (and instance counts) changed, only the classes and mixed groups of
        those nodes are rebuilt; any other change (a node new, gone from the checks, other GPUs) builds anew.
        """
        updates = {n.node_id: n for n in changed if self.nodes.get(n.node_id) != n}
        if not updates:
            return self
        groups: dict[str, dict[str, GPUGroup]] = {}  # model -> node_id -> its new group
        for node_id, node in updates.items():
            old = self.nodes.get(node_id)
            if old is None or _shape(old, self.prices) != _shape(node, self.prices):
                return Cluster.build({**self.nodes, **updates}.values(), self.prices)
            if _pre_check(node) is not None:
                continue  # rejected before and after, for the same reason: counted the same
            for group in _groups(node, self.prices):
                groups.setdefault(group.model, {})[node_id] = group
        models = []
        for index in self.models:
            new = groups.get(index.model)
            if not new:
                models.append(index)
                continue
            classes = tuple(
                c.replaced({n: g for n, g in new.items() if n in c.members}) if not new.keys().isdisjoint(c.members)
                else c
                for c in index.classes
            )  # fmt: skip
            mixed = tuple(new.get(g.node.node_id, g) for g in index.mixed)
            models.append(replace(index, classes=classes, mixed=mixed))
        return replace(self, models=tuple(models), nodes={**self.nodes, **updates})


def _node_id(group: GPUGroup) -> str:
    return group.node.node_id


def _pre_check(node: NodeState) -> Reason | None:
    """The first request-independent check the node fails, if any."""
    return next((reason for reason, check in NODE_CHECKS if not check(node)), None)


def _shape(node: NodeState, price_of: Mapping[str, float]) -> tuple[object, ...]:
    """What decides where a node sits in the index: its pre-check outcome and its GPU groups, free GPUs aside."""
    groups = tuple(sorted((g.model, g.vram_mib, g.healthy) for g in _groups(node, price_of)))
    return _pre_check(node), groups


def _groups(node: NodeState, price_of: Mapping[str, float]) -> list[GPUGroup]:
    by_model: dict[str, list[GPU]] = {}
    for gpu in node.gpus:
        if gpu.model is not None and gpu.model in price_of:
            by_model.setdefault(gpu.model, []).append(gpu)
    groups = []
    for model, members in by_model.items():
        healthy = [g for g in members if g.healthy]
        sized = healthy or members  # with no healthy GPU the node is "too few GPUs", not "too little VRAM"
        groups.append(
            GPUGroup(
                node=node,
                model=model,
                vram_mib=min(g.memory_mib for g in sized),
                healthy=len(healthy),
                free=tuple(g.uuid for g in healthy if not g.in_use),
            )
        )
    return groups
