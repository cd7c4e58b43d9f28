"""The Nomad half's tables (nodes, jobs, allocations, evaluations) and the index topics they bump."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.events import Event, EventBroker
from chutes.devcluster.nomad.nodes import Node
from chutes.devcluster.nomad.placement import NodeUsage
from chutes.devcluster.nomad.records import Allocation, Deployment, Evaluation, now_ns
from chutes.devcluster.state.index import IndexStore


class NotFound(KeyError):
    """An ID (or unique prefix) that matches nothing."""


class NomadState:
    def __init__(self, index: IndexStore) -> None:
        self.index = index
        self.nodes: dict[str, Node] = {}
        self.jobs: dict[str, models.Job] = {}
        self.allocs: dict[str, Allocation] = {}
        self.evals: dict[str, Evaluation] = {}
        self.deployments: dict[str, Deployment] = {}
        self.dispatch_tokens: dict[str, str] = {}
        self.on_change: list[Callable[[], None]] = []
        self.events = EventBroker()

    def bump(self, *topics: str) -> int:
        idx = self.index.bump(*topics)
        for callback in self.on_change:
            callback()
        return idx

    # -- lookups -------------------------------------------------------------------------------------------

    def node(self, ref: str) -> Node:
        if ref in self.nodes:
            return self.nodes[ref]
        found = [n for n in self.nodes.values() if n.id.startswith(ref) or n.name == ref]
        if len(found) != 1:
            raise NotFound(ref)
        return found[0]

    def alloc(self, ref: str) -> Allocation:
        if ref in self.allocs:
            return self.allocs[ref]
        found = [a for a in self.allocs.values() if a.id.startswith(ref)] if len(ref) >= 8 else []
        if len(found) != 1:
            raise NotFound(ref)
        return found[0]

    def evaluation(self, ref: str) -> Evaluation:
        if ref in self.evals:
            return self.evals[ref]
        found = [e for e in self.evals.values() if e.id.startswith(ref)] if len(ref) >= 8 else []
        if len(found) != 1:
            raise NotFound(ref)
        return found[0]

    def job_allocs(self, job_id: str) -> list[Allocation]:
        return sorted((a for a in self.allocs.values() if a.job_id == job_id), key=lambda a: a.create_index)

    def job_deployments(self, job_id: str) -> list[Deployment]:
        return sorted((d for d in self.deployments.values() if d.job_id == job_id), key=lambda d: d.create_index)

    def latest_deployment(self, job_id: str) -> Deployment | None:
        """The job's newest deployment of its current incarnation (a purged-and-registered job starts over)."""
        job = self.jobs.get(job_id)
        found = [d for d in self.job_deployments(job_id) if job is None or d.job_create_index == job.CreateIndex]
        return found[-1] if found else None

    def deployment(self, ref: str) -> Deployment:
        if ref in self.deployments:
            return self.deployments[ref]
        found = [d for d in self.deployments.values() if d.id.startswith(ref)] if len(ref) >= 8 else []
        if len(found) != 1:
            raise NotFound(ref)
        return found[0]

    def job_evals(self, job_id: str) -> list[Evaluation]:
        return sorted((e for e in self.evals.values() if e.job_id == job_id), key=lambda e: e.create_index)

    def usage(self, job_id: str, group: str) -> dict[str, NodeUsage]:
        """What every node's allocations hold; an allocation told to stop frees its share at once (as in a plan)."""
        out: dict[str, NodeUsage] = {}
        for alloc in self.allocs.values():
            if alloc.terminal or alloc.desired_status != "run":
                continue
            use = out.setdefault(alloc.node_id, NodeUsage())
            for devices in alloc.devices.values():
                for device in devices:
                    use.device_ids.update(device["DeviceIDs"])
            use.cpu += sum(alloc.task_cpu.values())
            use.memory_mb += sum(alloc.task_memory.values())
            if alloc.job_id == job_id:
                use.job_allocs += 1
                if alloc.task_group == group:
                    use.group_allocs += 1
        return out

    # -- mutations -----------------------------------------------------------------------------------------

    def put_alloc(self, alloc: Allocation, client: bool = False) -> None:
        topics = ["allocs", f"alloc:{alloc.id}", f"job_allocs:{alloc.job_id}", f"node_allocs:{alloc.node_id}",
                  f"job:{alloc.job_id}", "jobs"]  # fmt: skip
        idx = self.index.index + 1
        if alloc.id not in self.allocs:
            alloc.create_index = idx
        if not client:
            alloc.alloc_modify_index = idx
        alloc.modify_index = idx
        self.allocs[alloc.id] = alloc
        self.bump(*topics)
        keys = [alloc.job_id] + ([alloc.deployment_id] if alloc.deployment_id else [])
        self.events.publish(Event(idx, "Allocation", "AllocationUpdated" if client else "PlanResult", alloc.id, keys,
                                  {"Allocation": alloc.stub_json()}))  # fmt: skip

    def put_eval(self, evaluation: Evaluation) -> None:
        idx = self.index.index + 1
        if evaluation.id not in self.evals:
            evaluation.create_index = idx
        evaluation.modify_index = idx
        self.evals[evaluation.id] = evaluation
        self.bump("evals", f"eval:{evaluation.id}", f"job_evals:{evaluation.job_id}", f"job:{evaluation.job_id}")
        self.events.publish(Event(idx, "Evaluation", "EvaluationUpdated", evaluation.id, [evaluation.job_id],
                                  {"Evaluation": evaluation.to_json()}))  # fmt: skip

    def put_deployment(self, deployment: Deployment) -> None:
        idx = self.index.index + 1
        if deployment.id not in self.deployments:
            deployment.create_index = idx
        deployment.modify_index = idx
        deployment.modify_time = now_ns()
        self.deployments[deployment.id] = deployment
        self.bump("deployments", f"deployment:{deployment.id}", f"job_deployments:{deployment.job_id}",
                  f"job:{deployment.job_id}")  # fmt: skip
        self.events.publish(Event(idx, "Deployment", "DeploymentStatusUpdate", deployment.id, [deployment.job_id],
                                  {"Deployment": deployment.to_json()}))  # fmt: skip

    def put_job(self, job: models.Job) -> int:
        idx = self.index.index + 1
        assert job.ID is not None
        old = self.jobs.get(job.ID)
        job.CreateIndex = old.CreateIndex if old is not None else idx
        job.ModifyIndex = idx
        self.jobs[job.ID] = job
        out = self.bump("jobs", f"job:{job.ID}")
        snapshot = job.model_dump(mode="json")
        self.events.publish(Event(idx, "Job", "JobRegistered", job.ID, [], {"Job": snapshot}))
        return out

    def delete_job(self, job_id: str) -> None:
        """Purge the job; its allocations and evaluations stay readable (Nomad garbage-collects them later)."""
        job = self.jobs.pop(job_id, None)
        idx = self.bump("jobs", f"job:{job_id}")
        snapshot = job.model_dump(mode="json") if job is not None else None
        self.events.publish(Event(idx, "Job", "JobDeregistered", job_id, [], {"Job": snapshot}))

    def touch_node(self, node: Node) -> None:
        node.modify_index = self.bump("nodes", f"node:{node.id}")
        self.events.publish(Event(node.modify_index, "Node", "NodeEvent", node.id, [],
                                  {"Node": node.stub_json()}))  # fmt: skip

    # -- snapshot ------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "jobs": [j.model_dump(mode="json") for j in self.jobs.values()],
            "allocs": [a.model_dump(mode="json") for a in self.allocs.values()],
            "evals": [e.model_dump(mode="json") for e in self.evals.values()],
            "deployments": [d.model_dump(mode="json") for d in self.deployments.values()],
            "node_meta": {n.name: n.dynamic_meta for n in self.nodes.values() if n.dynamic_meta},
            "node_scheduling": {
                n.name: {"eligibility": n.eligibility, "drain_strategy": n.drain_strategy, "last_drain": n.last_drain}
                for n in self.nodes.values()
                if n.eligibility != "eligible" or n.last_drain is not None
            },
            "dispatch_tokens": dict(self.dispatch_tokens),
        }

    def restore(self, data: dict[str, Any]) -> None:
        for item in data.get("jobs", []):
            job = models.Job.model_validate(item)
            assert job.ID is not None
            self.jobs[job.ID] = job
        for item in data.get("allocs", []):
            alloc = Allocation.model_validate(item)
            if alloc.node_id in self.nodes:
                self.allocs[alloc.id] = alloc
        for item in data.get("evals", []):
            evaluation = Evaluation.model_validate(item)
            self.evals[evaluation.id] = evaluation
        for item in data.get("deployments", []):
            deployment = Deployment.model_validate(item)
            self.deployments[deployment.id] = deployment
        for name, meta in data.get("node_meta", {}).items():
            for node in self.nodes.values():
                if node.name == name:
                    node.dynamic_meta = dict(meta)
        for name, sched in data.get("node_scheduling", {}).items():
            for node in self.nodes.values():
                if node.name == name:
                    node.eligibility = sched.get("eligibility") or "eligible"
                    node.drain_strategy = sched.get("drain_strategy")
                    node.last_drain = sched.get("last_drain")
        self.dispatch_tokens.update(data.get("dispatch_tokens", {}))
