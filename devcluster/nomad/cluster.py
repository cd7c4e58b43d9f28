"""The Nomad half as one object: state, scheduler and executor glued together, and its lifecycle.

The HTTP handlers call methods here. As in Nomad, what a client asks for (register, deregister, scale,
dispatch, force-evaluate, stop an allocation) is an evaluation that is ``pending`` when the reply goes out; a
worker on the event loop processes the queue moments later (milliseconds), in order. When an allocation ends,
its job is evaluated again (rescheduling) and blocked evaluations are retried.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from chutes.devcluster.consul.catalog import Catalog
from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.deployments import TICK_S, DeploymentWatcher
from chutes.devcluster.nomad.drain import Drainer
from chutes.devcluster.nomad.executor import AllocRunner, ProcessTable
from chutes.devcluster.nomad.nodes import Node
from chutes.devcluster.nomad.podman import DockerDriver, DriverError
from chutes.devcluster.nomad.records import Allocation, Evaluation, now_ns
from chutes.devcluster.nomad.scheduler import Plan, Scheduler
from chutes.devcluster.nomad.services import ServiceRegistrar
from chutes.devcluster.nomad.state import NomadState
from chutes.devcluster.nomad.template_runner import RestartQueue, signal_task
from chutes.devcluster.nomad.variables import VariableStore
from chutes.devcluster.state.index import IndexStore

log = logging.getLogger(__name__)


def pick_free_port() -> int:
    """A free TCP port on loopback (the kernel's choice), as Nomad picks from its dynamic range."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NomadCluster:
    def __init__(
        self,
        index: IndexStore,
        catalog: Catalog,
        data_dir: Path,
        nodes: list[Node],
        docker: DockerDriver | None = None,
    ) -> None:
        self.state = NomadState(index)
        self.variables = VariableStore(index)
        self.docker = docker
        self.catalog = catalog
        for node in nodes:
            self.state.nodes[node.id] = node
            catalog.ensure_node(node.name)
        self.scheduler = Scheduler(self.state, pick_free_port)
        self.registrar = ServiceRegistrar(catalog)
        self.alloc_root = data_dir / "allocs"
        self.processes = ProcessTable(data_dir / "tasks.json")
        self.runners: dict[str, AllocRunner] = {}
        self.closing = False
        self._background: set[asyncio.Task[None]] = set()
        self._last_status: dict[str, str] = {}
        self.scaling_events: dict[str, dict[str, list[dict[str, object]]]] = {}
        self.template_restarts = RestartQueue(self._spawn, self._template_healthy)
        self._queue: collections.deque[str] = collections.deque()
        self._worker_scheduled = False
        self.deployments = DeploymentWatcher(self.state, self.deployment_healthy, self.submit_eval)
        self.drainer = Drainer(self.state, self.deployment_healthy, self.evaluate, self._stop_runners,
                               self.retry_blocked)  # fmt: skip
        self.variables.on_change.append(self._variable_changed)

    @property
    def local_node(self) -> Node:
        return next((n for n in self.state.nodes.values() if not n.simulated), next(iter(self.state.nodes.values())))

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def open(self) -> None:
        reaped = self.processes.reap_leftovers()
        if reaped:
            log.warning("killed %d task process group(s) left behind by a previous devcluster", reaped)
        if self.docker is not None:
            try:
                removed = await self.docker.reap_leftovers()
            except (DriverError, OSError, TimeoutError) as exc:
                log.warning("could not look for containers left behind by a previous devcluster: %s", exc)
            else:
                if removed:
                    log.warning("removed %d container(s) left behind by a previous devcluster", removed)
        for alloc in list(self.state.allocs.values()):
            job = self.state.jobs.get(alloc.job_id)
            if not alloc.terminal and (alloc.desired_status != "run" or job is None or job.Stop):
                # It was being stopped when the devcluster went down: its processes are gone now.
                alloc.client_status = "complete"
                alloc.client_description = "stopped while the devcluster was down"
                self.state.put_alloc(alloc, client=True)
            self._last_status[alloc.id] = alloc.client_status
            if alloc.desired_status == "run" and not alloc.terminal:
                self._start(alloc, restarted=True)
        for job_id in list(self.state.jobs):
            self.evaluate(job_id, "job-register", only_if_needed=True)
        self.retry_blocked()
        self._spawn(self._watch_deployments())

    async def _watch_deployments(self) -> None:
        while not self.closing:
            try:
                self.deployments.tick()
                self.drainer.tick()
            except Exception:
                log.exception("the deployment watcher or the drainer failed (retrying)")
            await asyncio.sleep(TICK_S)

    async def close(self) -> None:
        """Stop every task (the snapshot taken before keeps the allocations to restart them next time)."""
        self.closing = True
        runners = list(self.runners.values())
        await asyncio.gather(*(r.stop("devcluster shutting down") for r in runners), return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- evaluations ---------------------------------------------------------------------------------------

    def evaluate(self, job_id: str, triggered_by: str, only_if_needed: bool = False) -> Evaluation:
        evaluation = self.scheduler.new_eval(job_id, triggered_by)
        plan = self.scheduler.evaluate(evaluation)
        if only_if_needed and not plan.placed and not plan.stopped and not evaluation.failed_tg_allocs:
            self.state.evals.pop(evaluation.id, None)
        self._apply(plan)
        return evaluation

    def submit_eval(self, job_id: str, triggered_by: str) -> Evaluation:
        """A ``pending`` evaluation for the worker (what the API answers with): placement happens after the reply."""
        evaluation = self.scheduler.new_eval(job_id, triggered_by)
        self.state.put_eval(evaluation)
        self._queue.append(evaluation.id)
        if not self._worker_scheduled and not self.closing:
            self._worker_scheduled = True
            asyncio.get_running_loop().call_soon(self._work)
        return evaluation

    def _work(self) -> None:
        """The eval broker and its one worker: every pending evaluation, oldest first."""
        self._worker_scheduled = False
        while self._queue and not self.closing:
            evaluation = self.state.evals.get(self._queue.popleft())
            if evaluation is None or evaluation.status != "pending":
                continue
            try:
                self._apply(self.scheduler.evaluate(evaluation))
            except Exception:
                log.exception("evaluation %s of job %s failed", evaluation.id, evaluation.job_id)
                evaluation.status = "failed"
                evaluation.status_description = "the devcluster's scheduler failed (see its log)"
                self.state.put_eval(evaluation)

    def retry_blocked(self) -> None:
        """Capacity may have freed: run every blocked evaluation again."""
        for evaluation in [e for e in self.state.evals.values() if e.status == "blocked"]:
            if evaluation.job_id not in self.state.jobs:
                evaluation.status = "canceled"
                self.state.put_eval(evaluation)
                continue
            self._apply(self.scheduler.evaluate(evaluation))

    def _stop_runners(self, allocs: list[Allocation]) -> None:
        self._apply(Plan(Evaluation(id="", job_id="", type="", triggered_by=""), stopped=allocs))

    def _apply(self, plan: Plan) -> None:
        if self.closing:
            return
        for alloc in plan.stopped:
            runner = self.runners.get(alloc.id)
            if runner is not None:
                self._spawn(runner.stop(alloc.desired_description or "alloc stopped"))
            elif not alloc.terminal:
                alloc.client_status = "complete"
                alloc.client_description = "alloc stopped before it started"
                self.state.put_alloc(alloc, client=True)
        for alloc in plan.placed:
            self._start(alloc)
        if plan.retry_after_s is not None:
            job_id = plan.evaluation.job_id
            asyncio.get_running_loop().call_later(
                plan.retry_after_s + 0.05, lambda: self._soon_evaluate(job_id, "alloc-failure")
            )

    def _soon_evaluate(self, job_id: str, why: str) -> None:
        if not self.closing and job_id in self.state.jobs:
            self.evaluate(job_id, why, only_if_needed=True)

    # -- allocations ---------------------------------------------------------------------------------------

    def _start(self, alloc: Allocation, restarted: bool = False) -> None:
        job = self.state.jobs.get(alloc.job_id)
        node = self.state.nodes.get(alloc.node_id)
        if job is None or node is None:
            return
        runner = AllocRunner(
            alloc,
            models.Job.model_validate(alloc.job),
            node,
            self.alloc_root / alloc.id,
            self.processes,
            self.registrar,
            self._client_update,
            self.docker,
            variables=self.variables,
        )
        self.runners[alloc.id] = runner
        runner.start(restarted=restarted)

    def stop_alloc(self, alloc: Allocation, why: str) -> Evaluation:
        """``POST /v1/allocation/:id/stop``: stop it; the job's evaluation places a replacement."""
        alloc.desired_status = "stop"
        alloc.desired_description = why
        self.state.put_alloc(alloc)
        runner = self.runners.get(alloc.id)
        if runner is not None:
            self._spawn(runner.stop(why))
        return self.submit_eval(alloc.job_id, "alloc-stop")

    def _client_update(self, alloc: Allocation) -> None:
        if self.closing:
            return
        alloc.modify_time = now_ns()
        self.state.put_alloc(alloc, client=True)
        before = self._last_status.get(alloc.id)
        self._last_status[alloc.id] = alloc.client_status
        if alloc.terminal and before != alloc.client_status:
            runner = self.runners.get(alloc.id)
            if runner is not None and runner.done:
                self.runners.pop(alloc.id, None)
            asyncio.get_running_loop().call_soon(self._after_terminal, alloc.job_id)

    def _after_terminal(self, job_id: str) -> None:
        if self.closing:
            return
        for alloc_id in [a for a, r in self.runners.items() if r.done]:
            self.runners.pop(alloc_id, None)
        if job_id in self.state.jobs:
            self.evaluate(job_id, "alloc-failure", only_if_needed=True)
        self.retry_blocked()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- templates -------------------------------------------------------------------------------------------

    def _variable_changed(self, namespace: str, path: str) -> None:
        """Templates reading the variable render again; restarts queue up one allocation at a time."""
        if self.closing:
            return
        for runner in list(self.runners.values()):
            if runner.done or runner.stopping:
                continue
            for task in runner.tasks:
                if task.templates is None or not task.templates.reads(namespace, path):
                    continue
                mode = task.templates.changed(namespace, path)
                if mode == "restart":
                    self.template_restarts.request(runner, task.name)
                elif mode == "signal":
                    self._spawn(signal_task(task, task.templates.change_signal()))

    def _template_healthy(self, runner: AllocRunner) -> bool:
        """Every task runs again and, if the group registers services, they are back with passing checks."""
        if not runner.tasks or not all(t.state.state == "running" for t in runner.tasks):
            return False
        has_services = bool(runner.group.Services) or any(t.task.Services for t in runner.tasks)
        if has_services and not runner.services_registered:
            return False
        return self.alloc_healthy(runner.alloc)

    # -- nodes ---------------------------------------------------------------------------------------------

    def set_node_meta(self, node: Node, changes: dict[str, str | None]) -> None:
        for key, value in changes.items():
            if value is None:
                node.dynamic_meta.pop(key, None)
            else:
                node.dynamic_meta[key] = value
        self.state.touch_node(node)
        self.retry_blocked()
        for job in list(self.state.jobs.values()):
            if (job.Type or "") in ("system", "sysbatch") and not job.Stop and job.ID:
                self.evaluate(job.ID, "node-update", only_if_needed=True)

    def deployment_healthy(self, alloc: Allocation, health_check: str) -> bool:
        """Does the allocation's health condition hold now (``checks``: tasks and checks; ``task_states``:
        tasks; ``manual``: never by itself)?"""
        runner = self.runners.get(alloc.id)
        if health_check == "manual" or runner is None or runner.done or runner.stopping:
            return False
        if not runner.tasks or not all(t.state.state == "running" for t in runner.tasks):
            return False
        if health_check == "task_states":
            return True
        return self._template_healthy(runner)

    def alloc_healthy(self, alloc: Allocation) -> bool:
        """Every check of every service the allocation registered is passing."""
        prefix = f"_nomad-task-{alloc.id}-"
        checks = [c for c in self.catalog.checks.values() if c.service_id.startswith(prefix)]
        return all(c.status == "passing" for c in checks)

    def alloc_log_path(self, alloc: Allocation, task: str, kind: str) -> Path:
        return self.alloc_root / alloc.id / "alloc" / "logs" / f"{task}.{kind}.0"

    def task_running(self, alloc: Allocation, task: str) -> bool:
        runner = self.runners.get(alloc.id)
        if runner is None or runner.done:
            return False
        return not (alloc.task_states.get(task) and alloc.task_states[task].state == "dead")
