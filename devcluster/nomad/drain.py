"""Node drain and scheduling eligibility, as Nomad's node endpoints and drainer handle them.

A drain makes the node ineligible and migrates its service allocations to other nodes, per task group
``migrate`` block (``max_parallel`` at a time; the next once the replacements are healthy for
``min_healthy_time``, or ``healthy_deadline`` passed). Batch allocations run on until the deadline; system
allocations stop once everything else has left (unless ``IgnoreSystemJobs``). At the deadline everything left
is migrated at once. When nothing is left the drain is complete and the node stays ineligible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chutes.devcluster.durations import NS_PER_S
from chutes.devcluster.http_util import APIError
from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.nodes import Node
from chutes.devcluster.nomad.records import Allocation, Evaluation, now_ns, rfc3339
from chutes.devcluster.nomad.state import NomadState

_MIGRATE_DEFAULTS = models.MigrateStrategy(
    MaxParallel=1, HealthCheck="checks", MinHealthyTime=10 * NS_PER_S, HealthyDeadline=300 * NS_PER_S
)
ZERO_TIME = "0001-01-01T00:00:00Z"


def migrate_strategy(job: models.Job, group: models.TaskGroup) -> models.MigrateStrategy:
    merged = _MIGRATE_DEFAULTS.model_dump()
    for source in (job.Migrate, group.Migrate):
        if source is not None:
            merged.update({k: v for k, v in source.model_dump().items() if v is not None})
    return models.MigrateStrategy(**merged)


@dataclass
class Drainer:
    state: NomadState
    healthy: Callable[[Allocation, str], bool]  # (alloc, health_check) -> does its health condition hold now?
    evaluate: Callable[[str, str], Evaluation]  # synchronous evaluation: (job_id, triggered_by)
    stop: Callable[[list[Allocation]], None]  # runs what a plan stopped
    retry_blocked: Callable[[], None]
    # Replacement allocation ID -> when it was placed, per migrated allocation's group (job_id, group).
    replacements: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    _moving: list[Allocation] = field(default_factory=list)  # chosen in this tick (max_parallel within a tick)

    # -- the endpoints -----------------------------------------------------------------------------------------

    def set_drain(self, node: Node, spec: dict[str, Any] | None, mark_eligible: bool, meta: dict[str, str]) -> None:
        now = now_ns()
        if spec is not None:
            deadline = int(spec.get("Deadline") or 0)
            updating = node.drain_strategy is not None
            started = node.drain_strategy["StartedAt"] if updating and node.drain_strategy else rfc3339(now)
            node.drain_strategy = {
                "Deadline": deadline,
                "IgnoreSystemJobs": bool(spec.get("IgnoreSystemJobs")),
                "ForceDeadline": rfc3339(now + deadline) if deadline > 0 else ZERO_TIME,
                "StartedAt": started,
            }
            node.eligibility = "ineligible"
            node.last_drain = {"StartedAt": started, "UpdatedAt": rfc3339(now), "Status": "draining",
                               "AccessorID": "", "Meta": meta or None}  # fmt: skip
            self._event(node, "Node drain strategy updated" if updating else "Node drain strategy set")
        else:
            if node.drain_strategy is not None:
                node.drain_strategy = None
                if node.last_drain is not None:
                    node.last_drain = {**node.last_drain, "Status": "canceled", "UpdatedAt": rfc3339(now)}
                self._event(node, "Node drain disabled")
            if mark_eligible:
                node.eligibility = "eligible"
        self.state.touch_node(node)
        if node.eligibility == "eligible":
            self.retry_blocked()
        self.tick()

    def set_eligibility(self, node: Node, eligibility: str) -> None:
        if eligibility not in ("eligible", "ineligible"):
            raise APIError(500, f'invalid scheduling eligibility "{eligibility}"')
        if eligibility == "eligible" and node.drain_strategy is not None:
            raise APIError(500, "can not set node's scheduling eligibility to eligible while it is draining")
        changed = node.eligibility != eligibility
        node.eligibility = eligibility
        if changed:
            self._event(node, f"Node marked as {eligibility} for scheduling")
        self.state.touch_node(node)
        if changed and eligibility == "eligible":
            self.retry_blocked()

    def _event(self, node: Node, message: str, details: dict[str, str] | None = None) -> None:
        node.events.append({"Message": message, "Subsystem": "Drain", "Details": details,
                            "Timestamp": rfc3339(now_ns()), "CreateIndex": self.state.index.index})  # fmt: skip
        del node.events[:-9]

    # -- the drainer -------------------------------------------------------------------------------------------

    def tick(self) -> None:
        for node in [n for n in self.state.nodes.values() if n.drain_strategy is not None]:
            self._drain(node)

    def _drain(self, node: Node) -> None:
        strategy = node.drain_strategy or {}
        deadline = int(strategy.get("Deadline") or 0)
        forced = deadline < 0 or (
            deadline > 0 and strategy.get("ForceDeadline", ZERO_TIME) != ZERO_TIME
            and rfc3339(now_ns()) >= str(strategy["ForceDeadline"])
        )  # fmt: skip
        remaining = [a for a in self.state.allocs.values()
                     if a.node_id == node.id and a.desired_status == "run" and not a.terminal]  # fmt: skip
        others: list[Allocation] = []
        system: list[Allocation] = []
        for alloc in remaining:
            job = self.state.jobs.get(alloc.job_id)
            kind = (job.Type if job else None) or "service"
            (system if kind in ("system", "sysbatch") else others).append(alloc)
        if not strategy.get("IgnoreSystemJobs") and not others and system:
            self._migrate(system)  # system allocations leave last
        movable: list[Allocation] = []
        for alloc in others:
            job = self.state.jobs.get(alloc.job_id)
            if forced:
                movable.append(alloc)
            elif job is not None and (job.Type or "service") == "service":
                movable += self._may_move(job, alloc)
        self._migrate(movable)
        if not remaining_after(self.state, node, strategy):
            node.drain_strategy = None
            if node.last_drain is not None:
                node.last_drain = {**node.last_drain, "Status": "complete", "UpdatedAt": rfc3339(now_ns())}
            self._event(node, "Node drain complete", {"deadline_reached": "true"} if forced and deadline else None)
            self.state.touch_node(node)

    def _may_move(self, job: models.Job, alloc: Allocation) -> list[Allocation]:
        group = next((g for g in job.TaskGroups or [] if g.Name == alloc.task_group), None)
        if group is None:
            return [alloc]
        strategy = migrate_strategy(job, group)
        key = (alloc.job_id, alloc.task_group)
        placed = self.replacements.setdefault(key, {})
        now = now_ns()
        in_flight = 0
        for alloc_id in list(placed):
            replacement = self.state.allocs.get(alloc_id)
            if replacement is None or replacement.terminal or replacement.desired_status != "run":
                placed.pop(alloc_id)
                continue
            if self.healthy(replacement, strategy.HealthCheck or "checks"):
                replacement.healthy_since = replacement.healthy_since or now
                if now - replacement.healthy_since >= (strategy.MinHealthyTime or 0):
                    placed.pop(alloc_id)
                    continue
            else:
                replacement.healthy_since = 0
            if now - replacement.create_time > (strategy.HealthyDeadline or 0):
                placed.pop(alloc_id)
                continue
            in_flight += 1
        already = sum(1 for a in self._moving if (a.job_id, a.task_group) == key)
        if in_flight + already >= (strategy.MaxParallel or 1):
            return []
        self._moving.append(alloc)
        return [alloc]

    def _migrate(self, allocs: list[Allocation]) -> None:
        """Stop each (``DesiredTransition.Migrate``) and let its job's evaluation place a replacement elsewhere."""
        self._moving = []
        if not allocs:
            return
        jobs: dict[str, list[Allocation]] = {}
        for alloc in allocs:
            alloc.migrate = True
            alloc.desired_status = "stop"
            alloc.desired_description = "alloc is being migrated"
            alloc.modify_time = now_ns()
            self.state.put_alloc(alloc)
            jobs.setdefault(alloc.job_id, []).append(alloc)
        self.stop(allocs)
        for job_id, moved in jobs.items():
            before = {a.id for a in self.state.job_allocs(job_id)}
            self.evaluate(job_id, "node-drain")
            for alloc in self.state.job_allocs(job_id):
                if alloc.id not in before:
                    for old in moved:
                        if old.task_group == alloc.task_group:
                            self.replacements.setdefault((job_id, alloc.task_group), {})[alloc.id] = alloc.create_time
                            break


def remaining_after(state: NomadState, node: Node, strategy: dict[str, Any]) -> bool:
    """Anything that still keeps the drain going: allocations that should run on the node and have not ended."""
    ignore_system = bool(strategy.get("IgnoreSystemJobs"))
    for alloc in state.allocs.values():
        if alloc.node_id != node.id or alloc.terminal or alloc.desired_status != "run":
            continue
        job = state.jobs.get(alloc.job_id)
        if ignore_system and job is not None and (job.Type or "") in ("system", "sysbatch"):
            continue
        return True
    return False
