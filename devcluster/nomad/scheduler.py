"""The scheduler: turns an evaluation of one job into a plan (allocations to place and to stop).

Service and batch jobs keep ``Count`` allocations per group (batch allocations that completed count as done);
system jobs keep one per feasible node. A group whose definition changed is replaced (destructive update): all
at once, or, for a service group with an update strategy (``MaxParallel`` > 0), through a deployment that
replaces ``MaxParallel`` allocations at a time, the next ones once those are healthy (deployments.py decides
health). A change of count only adds or stops allocations. Placements that do not fit are recorded in the
evaluation's ``FailedTGAllocs`` and a blocked evaluation is kept for the job, retried when capacity frees.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chutes.devcluster.durations import NS_PER_S
from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.placement import AllocMetric, NodeUsage, Placement, place
from chutes.devcluster.nomad.records import Allocation, Deployment, DeploymentGroup, Evaluation, TaskState, now_ns
from chutes.devcluster.nomad.state import NomadState


@dataclass
class Plan:
    evaluation: Evaluation
    placed: list[Allocation] = field(default_factory=list)
    stopped: list[Allocation] = field(default_factory=list)
    retry_after_s: float | None = None


def group_hash(job: dict[str, Any], group_name: str) -> str:
    """What makes an allocation outdated: the group's definition (minus its count) and the job's meta/constraints."""
    group = next((g for g in job.get("TaskGroups") or [] if g.get("Name") == group_name), None)
    if group is None:
        return ""
    relevant = {
        k: v for k, v in group.items() if k not in ("Count", "Scaling", "Update", "Migrate", "ReschedulePolicy")
    }
    basis = {
        "group": relevant,
        "meta": job.get("Meta"),
        "constraints": job.get("Constraints"),
        "affinities": job.get("Affinities"),
        "payload": job.get("Payload"),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


def reschedule_delay_s(policy: models.ReschedulePolicy, attempt: int) -> float:
    delay = (policy.Delay or 0) / NS_PER_S
    cap = (policy.MaxDelay or 0) / NS_PER_S
    func = policy.DelayFunction or "constant"
    if func == "exponential":
        delay = delay * (2 ** max(0, attempt - 1))
    elif func == "fibonacci":
        a, b = delay, delay
        for _ in range(max(0, attempt - 2)):
            a, b = b, a + b
        delay = b
    return min(delay, cap) if cap > 0 else delay


def reschedule_allowed(policy: models.ReschedulePolicy, alloc: Allocation, now: int) -> bool:
    if policy.Unlimited:
        return True
    window = policy.Interval or 0
    recent = [e for e in alloc.reschedule_events if window <= 0 or now - int(e["RescheduleTime"]) < window]
    return len(recent) < (policy.Attempts or 0)


_UPDATE_DEFAULTS = models.UpdateStrategy(
    Stagger=30 * NS_PER_S, MaxParallel=1, HealthCheck="checks", MinHealthyTime=10 * NS_PER_S,
    HealthyDeadline=300 * NS_PER_S, ProgressDeadline=600 * NS_PER_S, Canary=0, AutoRevert=False, AutoPromote=False,
)  # fmt: skip


def update_strategy(job: models.Job, group: models.TaskGroup) -> models.UpdateStrategy | None:
    """The group's update strategy as Nomad merges it (defaults, then the job's, then the group's); None when
    there is none (no ``update`` block, or ``MaxParallel`` 0: no deployment, updates all at once)."""
    if (job.Type or "service") != "service" or (job.Update is None and group.Update is None):
        return None
    merged = _UPDATE_DEFAULTS.model_dump()
    for source in (job.Update, group.Update):
        if source is not None:
            merged.update({k: v for k, v in source.model_dump().items() if v is not None})
    strategy = models.UpdateStrategy(**merged)
    return strategy if (strategy.MaxParallel or 0) > 0 else None


class Scheduler:
    def __init__(self, state: NomadState, pick_port: Callable[[], int]) -> None:
        self.state = state
        self.pick_port = pick_port

    def new_eval(self, job_id: str, triggered_by: str) -> Evaluation:
        job = self.state.jobs.get(job_id)
        return Evaluation(
            id=str(uuid.uuid4()),
            job_id=job_id,
            type=(job.Type if job else None) or "service",
            triggered_by=triggered_by,
            priority=(job.Priority if job else None) or 50,
            job_modify_index=(job.JobModifyIndex if job else None) or 0,
        )

    def evaluate(self, evaluation: Evaluation) -> Plan:
        """Process ``evaluation`` (new or a blocked one being retried) and record its outcome."""
        plan = Plan(evaluation)
        job = self.state.jobs.get(evaluation.job_id)
        live = [a for a in self.state.job_allocs(evaluation.job_id) if a.desired_status == "run"]
        failed: dict[str, AllocMetric] = {}
        queued: dict[str, int] = {}
        if job is None or job.Stop:
            for alloc in live:
                if not alloc.terminal:
                    self._stop(plan, alloc, "alloc not needed as job is stopped")
            for deployment in self.state.job_deployments(evaluation.job_id):
                if deployment.active:
                    self._end_deployment(deployment, "cancelled", "Cancelled because job is stopped")
        elif job.ParameterizedJob is not None and not job.Dispatched:
            pass  # a parameterized job only runs through its dispatched children
        else:
            job_json = job.model_dump(mode="json")
            for group in job.TaskGroups or []:
                mine = [a for a in live if a.task_group == group.Name]
                if (job.Type or "service") in ("system", "sysbatch"):
                    self._reconcile_system(plan, job, job_json, group, mine, failed, queued)
                else:
                    self._reconcile(plan, job, job_json, group, mine, failed, queued)
            for alloc in live:
                if alloc.task_group not in {g.Name for g in job.TaskGroups or []} and not alloc.terminal:
                    self._stop(plan, alloc, "alloc not needed due to job update")
        self._finish(plan, failed, queued)
        return plan

    # -- service and batch ---------------------------------------------------------------------------------

    def _reconcile(
        self,
        plan: Plan,
        job: models.Job,
        job_json: dict[str, Any],
        group: models.TaskGroup,
        mine: list[Allocation],
        failed: dict[str, AllocMetric],
        queued: dict[str, int],
    ) -> None:
        name = group.Name or ""
        want = group.Count or 0
        current_hash = group_hash(job_json, name)
        batch = (job.Type or "service") == "batch"
        policy = group.ReschedulePolicy or models.ReschedulePolicy()
        now = now_ns()
        keep: list[Allocation] = []
        replace: list[Allocation] = []
        deployment = self._deployment(job, group, mine, current_hash)
        budget = self._update_budget(deployment, name, mine, current_hash)
        outdated = sorted(
            (a for a in mine if not a.terminal and not a.next_allocation and group_hash(a.job, name) != current_hash),
            key=lambda a: a.index,
        )
        # Stop the outdated ones whose replacements may go now; the rest keep serving until their turn.
        updating = {a.id for a in outdated[: budget if budget is not None else len(outdated)]}
        for alloc in mine:
            if alloc.next_allocation:
                continue
            if not alloc.terminal:
                if group_hash(alloc.job, name) != current_hash:
                    if alloc.id in updating:
                        self._stop(plan, alloc, "alloc is being updated due to job update")
                    else:
                        keep.append(alloc)
                    continue
                if alloc.job_version != (job.Version or 0):
                    alloc.job = job_json
                    if deployment is not None and deployment.active and alloc.deployment_id != deployment.id:
                        # An in-place update joins the new deployment and proves its health again.
                        alloc.deployment_id = deployment.id
                        alloc.deployment_healthy = None
                        alloc.healthy_since = 0
                        deployment.groups[name].placed_allocs += 1
                        self.state.put_deployment(deployment)
                    self.state.put_alloc(alloc)
                keep.append(alloc)
            elif alloc.client_status == "complete" and batch:
                keep.append(alloc)
            elif alloc.client_status in ("failed", "lost") or (alloc.client_status == "complete" and not batch):
                if group_hash(alloc.job, name) != current_hash or reschedule_allowed(policy, alloc, now):
                    due = alloc.modify_time + int(reschedule_delay_s(policy, len(alloc.reschedule_events) + 1) * 1e9)
                    if due <= now or group_hash(alloc.job, name) != current_hash:
                        replace.append(alloc)
                    else:
                        keep.append(alloc)
                        wait = (due - now) / 1e9
                        plan.retry_after_s = min(plan.retry_after_s or wait, wait)
                else:
                    keep.append(alloc)  # out of reschedule attempts: it stays failed and holds its slot
        running = sorted(keep, key=lambda a: (a.terminal, a.index))
        while len(running) > want:
            # Scaling down stops outdated allocations first.
            extra = max(
                (a for a in running if not a.terminal),
                key=lambda a: (group_hash(a.job, name) != current_hash, a.index),
                default=None,
            )
            if extra is None:
                break
            running.remove(extra)
            self._stop(plan, extra, "alloc not needed due to job update")
        taken = {a.index for a in running}
        missing = want - len(running)
        usage = self.state.usage(job.ID or "", name)
        metric = AllocMetric()
        replacements = sorted(replace, key=lambda a: a.index)
        next_index = 0
        for _ in range(max(0, missing)):
            previous = replacements.pop(0) if replacements and replacements[0].index not in taken else None
            if previous is not None:
                index = previous.index
            else:
                while next_index in taken:
                    next_index += 1
                index = next_index
            taken.add(index)
            placement, metric = place(job, group, list(self.state.nodes.values()), usage, metric)
            if placement is None:
                queued[name] = queued.get(name, 0) + 1
                continue
            alloc = self._alloc(plan, job, job_json, group, placement, index, metric, previous)
            if deployment is not None and deployment.active:
                alloc.deployment_id = deployment.id
                deployment.groups[name].placed_allocs += 1
                self.state.put_deployment(deployment)
                self.state.put_alloc(alloc)
            _add_usage(usage, placement.node.id, alloc)
        if queued.get(name):
            metric.coalesced_failures = queued[name] - 1
            failed[name] = metric

    # -- deployments ---------------------------------------------------------------------------------------

    def _deployment(
        self, job: models.Job, group: models.TaskGroup, mine: list[Allocation], current_hash: str
    ) -> Deployment | None:
        """The deployment of the job's version that this group's changes go through (created when needed)."""
        name = group.Name or ""
        strategy = update_strategy(job, group)
        latest = self.state.latest_deployment(job.ID or "")
        version = job.Version or 0
        if latest is not None and latest.job_version != version and latest.active:
            self._end_deployment(latest, "cancelled", "Cancelled due to newer version of job")
        if strategy is None:
            return None
        if latest is not None and latest.job_version == version:
            if name not in latest.groups and latest.active:
                latest.groups[name] = _deployment_group(strategy, group.Count or 0)
                self.state.put_deployment(latest)
            return latest
        live = [a for a in mine if not a.terminal]
        destructive = any(group_hash(a.job, name) != current_hash for a in live)
        in_place = any(a.job_version != version for a in live)
        first = not any(a.job_version == version for a in mine)
        if (group.Count or 0) <= 0 or not (destructive or in_place or first):
            return None
        deployment = Deployment(
            id=str(uuid.uuid4()),
            job_id=job.ID or "",
            job_version=version,
            job_modify_index=job.JobModifyIndex or 0,
            job_create_index=job.CreateIndex or 0,
        )
        for other in job.TaskGroups or []:
            other_strategy = update_strategy(job, other)
            if other_strategy is not None:
                deployment.groups[other.Name or ""] = _deployment_group(other_strategy, other.Count or 0)
        self.state.put_deployment(deployment)
        return deployment

    def _update_budget(
        self, deployment: Deployment | None, name: str, mine: list[Allocation], current_hash: str
    ) -> int | None:
        """How many outdated allocations may be replaced now; None: all (no deployment governs the group)."""
        if deployment is None:
            return None
        state = deployment.groups.get(name)
        if state is None:
            return None
        if deployment.status != "running":
            return 0  # paused, failed, cancelled or done: no further destructive updates
        in_flight = sum(
            1
            for a in mine
            if a.deployment_id == deployment.id
            and a.deployment_healthy is not True
            and not a.terminal
            and group_hash(a.job, name) == current_hash
        )
        return max(0, state.max_parallel - in_flight)

    def _end_deployment(self, deployment: Deployment, status: str, description: str) -> None:
        deployment.status = status
        deployment.status_description = description
        self.state.put_deployment(deployment)

    # -- system --------------------------------------------------------------------------------------------

    def _reconcile_system(
        self,
        plan: Plan,
        job: models.Job,
        job_json: dict[str, Any],
        group: models.TaskGroup,
        mine: list[Allocation],
        failed: dict[str, AllocMetric],
        queued: dict[str, int],
    ) -> None:
        name = group.Name or ""
        current_hash = group_hash(job_json, name)
        by_node: dict[str, Allocation] = {}
        for alloc in mine:
            if alloc.terminal and not (job.Type == "sysbatch" and alloc.client_status == "complete"):
                continue
            if not alloc.terminal and group_hash(alloc.job, name) != current_hash:
                self._stop(plan, alloc, "alloc is being updated due to job update")
                continue
            by_node[alloc.node_id] = alloc
        usage = self.state.usage(job.ID or "", name)
        metric = AllocMetric()
        for index, node in enumerate(sorted(self.state.nodes.values(), key=lambda n: n.name)):
            if node.id in by_node:
                continue
            placement, attempt = place(job, group, [node], usage)
            if placement is not None:
                alloc = self._alloc(plan, job, job_json, group, placement, index, attempt, None)
                _add_usage(usage, node.id, alloc)
            elif attempt.nodes_exhausted:
                queued[name] = queued.get(name, 0) + 1
                metric.nodes_evaluated += 1
                metric.nodes_exhausted += 1
                metric.dimension_exhausted.update(attempt.dimension_exhausted)
        if queued.get(name):
            failed[name] = metric

    # -- plan application ----------------------------------------------------------------------------------

    def _alloc(
        self,
        plan: Plan,
        job: models.Job,
        job_json: dict[str, Any],
        group: models.TaskGroup,
        placement: Placement,
        index: int,
        metric: AllocMetric,
        previous: Allocation | None,
    ) -> Allocation:
        ports: list[dict[str, Any]] = []
        networks = list(group.Networks or [])
        for task in group.Tasks or []:
            networks += (task.Resources.Networks if task.Resources else None) or []
        for network in networks:
            for port in network.ReservedPorts or []:
                ports.append({"Label": port.Label, "Value": port.Value, "To": port.To or 0, "Dynamic": False})
            for port in network.DynamicPorts or []:
                value = self.pick_port()
                ports.append({"Label": port.Label, "Value": value, "To": port.To or 0, "Dynamic": True})
        alloc = Allocation(
            id=str(uuid.uuid4()),
            eval_id=plan.evaluation.id,
            name=f"{job.ID}.{group.Name}[{index}]",
            index=index,
            node_id=placement.node.id,
            node_name=placement.node.name,
            job_id=job.ID or "",
            job=job_json,
            task_group=group.Name or "",
            task_states={t.Name or "": TaskState() for t in group.Tasks or []},
            devices={task: [d.to_json() for d in items] for task, items in placement.devices.items()},
            ports=ports,
            task_cpu={t.Name or "": (t.Resources.CPU or 0) if t.Resources else 0 for t in group.Tasks or []},
            task_memory={t.Name or "": (t.Resources.MemoryMB or 0) if t.Resources else 0 for t in group.Tasks or []},
            metrics=metric.to_json(),
        )
        if previous is not None:
            alloc.previous_allocation = previous.id
            alloc.reschedule_events = [
                *previous.reschedule_events,
                {"RescheduleTime": now_ns(), "PrevAllocID": previous.id, "PrevNodeID": previous.node_id, "Delay": 0},
            ]
            previous.next_allocation = alloc.id
            self.state.put_alloc(previous)
        self.state.put_alloc(alloc)
        plan.placed.append(alloc)
        return alloc

    def _stop(self, plan: Plan, alloc: Allocation, why: str) -> None:
        alloc.desired_status = "stop"
        alloc.desired_description = why
        alloc.modify_time = now_ns()
        self.state.put_alloc(alloc)
        plan.stopped.append(alloc)

    def _finish(self, plan: Plan, failed: dict[str, AllocMetric], queued: dict[str, int]) -> None:
        evaluation = plan.evaluation
        was_blocked = evaluation.status == "blocked"
        evaluation.failed_tg_allocs = {k: v.to_json() for k, v in failed.items()}
        evaluation.queued_allocations = {
            (g.Name or ""): queued.get(g.Name or "", 0)
            for g in (
                self.state.jobs[evaluation.job_id].TaskGroups or [] if evaluation.job_id in self.state.jobs else []
            )
        }
        evaluation.modify_time = now_ns()
        others = [e for e in self.state.job_evals(evaluation.job_id) if e.status == "blocked" and e.id != evaluation.id]
        if failed:
            if was_blocked:
                evaluation.status_description = "created due to placement conflicts"
            else:
                evaluation.status = "complete"
                blocked = self.new_eval(evaluation.job_id, "queued-allocs")
                blocked.status = "blocked"
                blocked.status_description = "created to place remaining allocations"
                blocked.previous_eval = evaluation.id
                blocked.failed_tg_allocs = dict(evaluation.failed_tg_allocs)
                blocked.queued_allocations = dict(evaluation.queued_allocations)
                evaluation.blocked_eval = blocked.id
                self.state.put_eval(blocked)
        else:
            evaluation.status = "complete"
            evaluation.status_description = ""
        for other in others:
            if not (failed and was_blocked):
                other.status = "canceled"
                other.status_description = "evaluation superseded"
                other.modify_time = now_ns()
                self.state.put_eval(other)
        self.state.put_eval(evaluation)


def _deployment_group(strategy: models.UpdateStrategy, count: int) -> DeploymentGroup:
    progress = strategy.ProgressDeadline or 0
    return DeploymentGroup(
        auto_revert=bool(strategy.AutoRevert),
        auto_promote=bool(strategy.AutoPromote),
        progress_deadline=progress,
        require_progress_by=now_ns() + progress if progress else 0,
        desired_total=count,
        max_parallel=strategy.MaxParallel or 1,
        health_check=strategy.HealthCheck or "checks",
        min_healthy_time=strategy.MinHealthyTime or 0,
        healthy_deadline=strategy.HealthyDeadline or 0,
    )


def _add_usage(usage: dict[str, NodeUsage], node_id: str, alloc: Allocation) -> None:
    use = usage.setdefault(node_id, NodeUsage())
    for devices in alloc.devices.values():
        for device in devices:
            use.device_ids.update(device["DeviceIDs"])
    use.cpu += sum(alloc.task_cpu.values())
    use.memory_mb += sum(alloc.task_memory.values())
    use.job_allocs += 1
    use.group_allocs += 1
