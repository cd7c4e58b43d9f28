"""Placement, in Nomad's shape: feasibility, then ranking, then selection, with every rejection counted.

Pure functions over nodes, their current usage and one task group; no I/O. The result explains itself the way
Nomad's ``AllocationMetric`` does: ``ConstraintFiltered`` ("missing drivers", "missing devices", the constraint
text), ``DimensionExhausted`` ("cpu", "memory", "devices: no devices match request"), ``NodesEvaluated``...
"""

from __future__ import annotations

import fnmatch
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.constraints import (
    DISTINCT_HOSTS,
    check_constraint,
    device_matches,
    node_matches,
)
from chutes.devcluster.nomad.nodes import DeviceGroup, DeviceInstance, Node

# Drivers the devcluster can run; a node offers ``raw_exec`` always and ``docker`` when podman is enabled.
SUPPORTED_DRIVERS = frozenset({"raw_exec", "docker"})
DEVICES_EXHAUSTED = "devices: no devices match request"


@dataclass
class NodeUsage:
    """What the node's live allocations already hold, and how many belong to the job being placed."""

    device_ids: set[str] = field(default_factory=set)
    cpu: int = 0
    memory_mb: int = 0
    job_allocs: int = 0
    group_allocs: int = 0


@dataclass
class DeviceAssignment:
    vendor: str
    type: str
    name: str
    ids: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"Vendor": self.vendor, "Type": self.type, "Name": self.name, "DeviceIDs": list(self.ids)}


@dataclass
class AllocMetric:
    """Nomad's ``AllocationMetric``."""

    nodes_evaluated: int = 0
    nodes_filtered: int = 0
    nodes_in_pool: int = 0
    nodes_available: dict[str, int] = field(default_factory=dict)
    constraint_filtered: Counter[str] = field(default_factory=Counter)
    nodes_exhausted: int = 0
    dimension_exhausted: Counter[str] = field(default_factory=Counter)
    score_metadata: list[dict[str, Any]] = field(default_factory=list)
    allocation_time_ns: int = 0
    coalesced_failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "NodesEvaluated": self.nodes_evaluated,
            "NodesFiltered": self.nodes_filtered,
            "NodesInPool": self.nodes_in_pool,
            "NodesAvailable": dict(self.nodes_available),
            "ClassFiltered": None,
            "ConstraintFiltered": dict(self.constraint_filtered) or None,
            "NodesExhausted": self.nodes_exhausted,
            "ClassExhausted": None,
            "DimensionExhausted": dict(self.dimension_exhausted) or None,
            "QuotaExhausted": None,
            "ResourcesExhausted": None,
            "Scores": None,
            "ScoreMetaData": self.score_metadata or None,
            "AllocationTime": self.allocation_time_ns,
            "CoalescedFailures": self.coalesced_failures,
        }

    def explain(self) -> str:
        """One line: "0 of 3 nodes: 2 missing devices, 1 devices: no devices match request"."""
        reasons = [f"{n} {k}" for k, n in (self.constraint_filtered + self.dimension_exhausted).most_common()]
        return f"0 of {self.nodes_evaluated} nodes fit" + (": " + ", ".join(reasons) if reasons else "")


@dataclass
class Placement:
    node: Node
    devices: dict[str, list[DeviceAssignment]]
    score: float


def _request_matches(name: str, group: DeviceGroup) -> bool:
    parts = name.split("/", 2)
    if len(parts) == 1:
        return group.type == parts[0]
    if len(parts) == 2:
        return (group.vendor, group.type) == (parts[0], parts[1])
    return (group.vendor, group.type, group.name) == (parts[0], parts[1], parts[2])


def _id_constraint_ok(instance: DeviceInstance, c: models.Constraint) -> bool:
    value = c.RTarget or ""
    ids = [v.strip() for v in value.split(",")]
    op = c.Operand or "="
    if op in ("=", "==", "is"):
        return instance.id == value
    if op in ("!=", "not"):
        return instance.id != value
    if op in ("set_contains", "set_contains_all", "set_contains_any"):
        return instance.id in ids
    return check_constraint(op, instance.id, value, True, True)


def _is_ids(c: models.Constraint) -> bool:
    return (c.LTarget or "") == "${device.ids}"


def _group_ok(req: models.RequestedDevice, group: DeviceGroup) -> bool:
    if not _request_matches(req.Name or "", group):
        return False
    for c in req.Constraints or []:
        if _is_ids(c):
            continue
        if not device_matches(c.Operand or "=", c.LTarget, c.RTarget, group):
            return False
    return True


def _eligible_instances(req: models.RequestedDevice, group: DeviceGroup) -> list[DeviceInstance]:
    ids_constraints = [c for c in req.Constraints or [] if _is_ids(c)]
    return [i for i in group.instances if i.healthy and all(_id_constraint_ok(i, c) for c in ids_constraints)]


def _device_affinity(req: models.RequestedDevice, group: DeviceGroup) -> float:
    total = sum(abs(a.Weight or 50) for a in req.Affinities or [])
    if not total:
        return 0.0
    got = sum(
        (a.Weight or 50) for a in req.Affinities or [] if device_matches(a.Operand or "=", a.LTarget, a.RTarget, group)
    )
    return got / total


def _requests(group: models.TaskGroup) -> list[tuple[str, models.RequestedDevice]]:
    out = []
    for task in group.Tasks or []:
        for req in (task.Resources.Devices if task.Resources else None) or []:
            out.append((task.Name or "", req))
    return out


def _has_devices(node: Node, requests: list[tuple[str, models.RequestedDevice]]) -> bool:
    return all(
        any(_group_ok(req, g) and len(_eligible_instances(req, g)) >= (req.Count or 1) for g in node.devices)
        for _, req in requests
    )


def _assign_devices(
    node: Node, requests: list[tuple[str, models.RequestedDevice]], used: set[str]
) -> tuple[dict[str, list[DeviceAssignment]], float] | None:
    """Pick free instances for every request from one device group each; None when the node cannot."""
    taken = set(used)
    out: dict[str, list[DeviceAssignment]] = {}
    affinity_total = 0.0
    for task, req in requests:
        count = req.Count or 1
        best: tuple[float, int, str] | None = None
        best_pick: tuple[DeviceGroup, list[DeviceInstance]] | None = None
        for group in node.devices:
            if not _group_ok(req, group):
                continue
            free = [i for i in _eligible_instances(req, group) if i.id not in taken]
            if len(free) < count:
                continue
            # Prefer the group the affinities like most, then the fullest one (bin-packing within the node).
            key = (-_device_affinity(req, group), len(free), group.name)
            if best is None or key < best:
                best, best_pick = key, (group, free[:count])
        if best_pick is None or best is None:
            return None
        group, picked = best_pick
        taken.update(i.id for i in picked)
        affinity_total += -best[0]
        out.setdefault(task, []).append(DeviceAssignment(group.vendor, group.type, group.name, [i.id for i in picked]))
    return out, affinity_total


def _affinity_score(affinities: list[models.Affinity], node: Node) -> float | None:
    total = sum(abs(a.Weight or 50) for a in affinities)
    if not total:
        return None
    got = sum((a.Weight or 50) for a in affinities if node_matches(a.Operand or "=", a.LTarget, a.RTarget, node))
    return got / total


def _gpu_total(node: Node) -> int:
    return sum(len(g.instances) for g in node.devices)


def group_constraints(job: models.Job, group: models.TaskGroup) -> list[tuple[str, models.Constraint]]:
    """Every constraint that applies to a placement of ``group``, with its level (job, group or task)."""
    out = [("job", c) for c in job.Constraints or []] + [("group", c) for c in group.Constraints or []]
    for task in group.Tasks or []:
        out += [("task", c) for c in task.Constraints or []]
    return out


def datacenter_ok(job: models.Job, node: Node) -> bool:
    return any(fnmatch.fnmatchcase(node.datacenter, dc) for dc in job.Datacenters or ["*"])


def place(
    job: models.Job,
    group: models.TaskGroup,
    nodes: list[Node],
    usage: dict[str, NodeUsage],
    metric: AllocMetric | None = None,
) -> tuple[Placement | None, AllocMetric]:
    """Choose a node for one allocation of ``group``; the metric counts every node rejected and why."""
    started = time.perf_counter_ns()
    metric = metric if metric is not None else AllocMetric()
    fresh = AllocMetric()
    requests = _requests(group)
    constraints = group_constraints(job, group)
    cpu = sum((t.Resources.CPU or 0) if t.Resources else 0 for t in group.Tasks or [])
    memory = sum((t.Resources.MemoryMB or 0) if t.Resources else 0 for t in group.Tasks or [])
    affinities = list(job.Affinities or []) + list(group.Affinities or [])
    for task in group.Tasks or []:
        affinities += task.Affinities or []

    pool = job.NodePool or "default"
    candidates: list[Placement] = []
    for node in sorted(nodes, key=lambda n: n.name):
        if pool != "all" and node.node_pool != pool:
            continue
        if not datacenter_ok(job, node):
            continue
        fresh.nodes_in_pool += 1
        if node.status != "ready" or node.eligibility != "eligible":
            continue
        fresh.nodes_evaluated += 1
        fresh.nodes_available[node.datacenter] = fresh.nodes_available.get(node.datacenter, 0) + 1
        use = usage.get(node.id, NodeUsage())
        reason = _filter_reason(job, group, node, use, constraints, requests)
        if reason is not None:
            fresh.nodes_filtered += 1
            fresh.constraint_filtered[reason] += 1
            continue
        dimension = None
        if cpu and use.cpu + cpu > node.cpu_mhz:
            dimension = "cpu"
        elif memory and use.memory_mb + memory > node.memory_mb:
            dimension = "memory"
        assigned = None
        if dimension is None:
            assigned = _assign_devices(node, requests, use.device_ids)
            if assigned is None:
                dimension = DEVICES_EXHAUSTED
        if dimension is not None or assigned is None:
            fresh.nodes_exhausted += 1
            fresh.dimension_exhausted[dimension or DEVICES_EXHAUSTED] += 1
            continue
        devices, device_affinity = assigned
        candidates.append(_score(node, use, devices, device_affinity, affinities, cpu, memory, fresh))

    _merge(metric, fresh)
    metric.allocation_time_ns += time.perf_counter_ns() - started
    if not candidates:
        return None, metric
    best = max(candidates, key=lambda p: (p.score, [-ord(ch) for ch in p.node.name]))
    return best, metric


def _filter_reason(
    job: models.Job,
    group: models.TaskGroup,
    node: Node,
    use: NodeUsage,
    constraints: list[tuple[str, models.Constraint]],
    requests: list[tuple[str, models.RequestedDevice]],
) -> str | None:
    drivers = {t.Driver or "" for t in group.Tasks or []}
    if not drivers <= node.drivers.keys():
        return "missing drivers"
    for level, c in constraints:
        op = c.Operand or "="
        if op == DISTINCT_HOSTS:
            if (use.job_allocs if level == "job" else use.group_allocs) > 0:
                return DISTINCT_HOSTS
            continue
        if not node_matches(op, c.LTarget, c.RTarget, node):
            return c.describe()
    if requests and not _has_devices(node, requests):
        return "missing devices"
    return None


def _score(
    node: Node,
    use: NodeUsage,
    devices: dict[str, list[DeviceAssignment]],
    device_affinity: float,
    affinities: list[models.Affinity],
    cpu: int,
    memory: int,
    metric: AllocMetric,
) -> Placement:
    gpus = _gpu_total(node)
    asked = sum(len(a.ids) for assignments in devices.values() for a in assignments)
    if asked and gpus:
        # GPU bin-packing: fill the node whose GPUs end up most used, keeping whole nodes free for big asks.
        binpack = (len(use.device_ids) + asked) / gpus
    else:
        binpack = ((use.cpu + cpu) / node.cpu_mhz + (use.memory_mb + memory) / node.memory_mb) / 2
        if gpus:
            binpack -= 1.0  # keep GPU-less work off GPU nodes while other nodes fit it
    scores = {"binpack": round(binpack, 6)}
    affinity = _affinity_score(affinities, node)
    if affinity is not None:
        scores["node-affinity"] = round(affinity, 6)
    if device_affinity:
        scores["devices"] = round(device_affinity, 6)
    norm = sum(scores.values()) / len(scores)
    metric.score_metadata.append({"NodeID": node.id, "Scores": scores, "NormScore": round(norm, 6)})
    return Placement(node=node, devices=devices, score=norm)


def _merge(into: AllocMetric, fresh: AllocMetric) -> None:
    """Fold one attempt into the group's metric: counts from the latest attempt, failures coalesced."""
    into.nodes_evaluated = fresh.nodes_evaluated
    into.nodes_filtered = fresh.nodes_filtered
    into.nodes_in_pool = fresh.nodes_in_pool
    into.nodes_available = fresh.nodes_available
    into.constraint_filtered = fresh.constraint_filtered
    into.nodes_exhausted = fresh.nodes_exhausted
    into.dimension_exhausted = fresh.dimension_exhausted
    into.score_metadata = sorted(fresh.score_metadata, key=lambda s: -s["NormScore"])[:5]
