"""The deployment watcher: decides each deployed allocation's health and moves deployments along.

As Nomad's client and deployment watcher do: an allocation placed by a deployment is healthy once every task
runs and (``health_check = "checks"``) its services are registered with every check passing, continuously for
``min_healthy_time``; it is unhealthy when a task fails or ``healthy_deadline`` passes first. A healthy
allocation resets the group's progress deadline and triggers an evaluation that places the next batch. A
deployment fails when an allocation is unhealthy and ``progress_deadline`` is 0, or when its progress deadline
passes; it succeeds when every group has ``DesiredTotal`` healthy allocations and nothing outdated is left, and
its job version becomes ``Stable``. The operator's endpoints (fail, pause, promote, allocation-health) are
methods here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from chutes.devcluster.http_util import APIError, bad_request
from chutes.devcluster.nomad.records import Allocation, Deployment, now_ns
from chutes.devcluster.nomad.scheduler import group_hash
from chutes.devcluster.nomad.state import NomadState

if TYPE_CHECKING:
    from chutes.devcluster.nomad.records import Evaluation

TICK_S = 0.1


class DeploymentWatcher:
    def __init__(
        self,
        state: NomadState,
        healthy: Callable[[Allocation, str], bool],
        evaluate: Callable[[str, str], Evaluation],
    ) -> None:
        self.state = state
        self.healthy = healthy  # (alloc, health_check) -> does its health condition hold now?
        self.evaluate = evaluate  # (job_id, triggered_by) -> a pending evaluation

    def tick(self) -> None:
        for deployment in [d for d in self.state.deployments.values() if d.status == "running"]:
            self._watch(deployment)

    def _watch(self, deployment: Deployment) -> None:
        now = now_ns()
        job = self.state.jobs.get(deployment.job_id)
        if job is None:
            self._end(deployment, "cancelled", "Cancelled because job is stopped")
            return
        progressed = False
        unhealthy = False
        for alloc in self.state.job_allocs(deployment.job_id):
            if alloc.deployment_id != deployment.id or alloc.deployment_healthy is not None:
                continue
            group = deployment.groups.get(alloc.task_group)
            if group is None or alloc.desired_status != "run":
                continue
            verdict: bool | None = None
            if alloc.client_status in ("failed", "lost") or any(t.failed for t in alloc.task_states.values()):
                verdict = False
            elif alloc.client_status == "running" and self.healthy(alloc, group.health_check):
                alloc.healthy_since = alloc.healthy_since or now
                if now - alloc.healthy_since >= group.min_healthy_time:
                    verdict = True
            else:
                alloc.healthy_since = 0
                if group.healthy_deadline and now - alloc.create_time > group.healthy_deadline:
                    verdict = False
            if verdict is None:
                continue
            alloc.deployment_healthy = verdict
            alloc.deployment_timestamp = now
            alloc.deployment_modify_index = self.state.index.index + 1
            self.state.put_alloc(alloc)
            if verdict:
                group.healthy_allocs += 1
                if group.progress_deadline:
                    group.require_progress_by = now + group.progress_deadline
                progressed = True
            else:
                group.unhealthy_allocs += 1
                unhealthy = unhealthy or not group.progress_deadline
        if unhealthy:
            self._end(deployment, "failed", "Failed due to unhealthy allocations")
            return
        if any(g.require_progress_by and now > g.require_progress_by and not self._group_done(deployment, name)
               for name, g in deployment.groups.items()):  # fmt: skip
            self._end(deployment, "failed", "Failed due to progress deadline")
            return
        if all(self._group_done(deployment, name) for name in deployment.groups):
            self._end(deployment, "successful", "Deployment completed successfully")
            if job.Version == deployment.job_version:
                job.Stable = True
                self.state.put_job(job)
            return
        if progressed:
            self.state.put_deployment(deployment)
            self.evaluate(deployment.job_id, "deployment-watcher")

    def _group_done(self, deployment: Deployment, name: str) -> bool:
        group = deployment.groups[name]
        job = self.state.jobs.get(deployment.job_id)
        if job is None:
            return False
        current = group_hash(job.model_dump(mode="json"), name)
        live = [a for a in self.state.job_allocs(deployment.job_id)
                if a.task_group == name and a.desired_status == "run" and not a.terminal]  # fmt: skip
        outdated = [a for a in live if group_hash(a.job, name) != current]
        return not outdated and group.healthy_allocs >= group.desired_total

    def _end(self, deployment: Deployment, status: str, description: str) -> None:
        deployment.status = status
        deployment.status_description = description
        self.state.put_deployment(deployment)
        if status in ("failed", "cancelled"):
            # Capacity an unfinished rollout held may place something else now.
            self.evaluate(deployment.job_id, "deployment-watcher")

    # -- the operator's endpoints ----------------------------------------------------------------------------

    def fail(self, deployment: Deployment) -> Evaluation:
        if not deployment.active:
            raise APIError(500, "can't fail terminal deployment")
        self._end(deployment, "failed", "Deployment marked as failed")
        return self.evaluate(deployment.job_id, "deployment-watcher")

    def pause(self, deployment: Deployment, pause: bool) -> Evaluation:
        if not deployment.active:
            raise APIError(500, f"can't {'pause' if pause else 'resume'} terminal deployment")
        deployment.status = "paused" if pause else "running"
        deployment.status_description = "Deployment is paused" if pause else "Deployment is running"
        self.state.put_deployment(deployment)
        return self.evaluate(deployment.job_id, "deployment-watcher")

    def promote(self, deployment: Deployment) -> Evaluation:
        if not deployment.active:
            raise APIError(500, "can't promote terminal deployment")
        # Canaries are not implemented: there is nothing to promote, as for a deployment without canaries.
        return self.evaluate(deployment.job_id, "deployment-watcher")

    def set_health(self, deployment: Deployment, healthy: list[str], unhealthy: list[str]) -> Evaluation:
        if not deployment.active:
            raise APIError(500, "can't set health of allocations for a terminal deployment")
        if not healthy and not unhealthy:
            raise APIError(500, "must specify at least one healthy/unhealthy allocation ID")
        allocs = {}
        for alloc_id in healthy + unhealthy:
            alloc = self.state.allocs.get(alloc_id)
            if alloc is None or alloc.deployment_id != deployment.id:
                raise APIError(500, f'alloc "{alloc_id}" is not part of deployment "{deployment.id}"')
            allocs[alloc_id] = alloc
        now = now_ns()
        for alloc_id, alloc in allocs.items():
            verdict = alloc_id in healthy
            group = deployment.groups[alloc.task_group]
            if alloc.deployment_healthy is None:
                if verdict:
                    group.healthy_allocs += 1
                else:
                    group.unhealthy_allocs += 1
            alloc.deployment_healthy = verdict
            alloc.deployment_timestamp = now
            self.state.put_alloc(alloc)
        if unhealthy:
            self._end(deployment, "failed", "Failed due to unhealthy allocations")
        else:
            self.state.put_deployment(deployment)
        return self.evaluate(deployment.job_id, "deployment-watcher")


def check_body_id(path_id: str, body_id: object) -> None:
    """Nomad's checks of a deployment write's body against its path."""
    if not body_id:
        raise bad_request("DeploymentID must be specified")
    if body_id != path_id:
        raise bad_request("Deployment ID does not match")
