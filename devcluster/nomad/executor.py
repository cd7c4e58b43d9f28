"""The task runners: raw_exec (a local process in its own process group) and docker (a podman container, see
``podman.py``), with restarts and kill timeouts.

An :class:`AllocRunner` runs one allocation's tasks, records Nomad's task events, registers the allocation's
services once every task runs, and on stop deregisters them, sends the kill signal to each task's process group,
waits ``KillTimeout`` and then SIGKILLs the group. The main process exiting also SIGKILLs what is left of its
group, so no task leaves orphans behind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from chutes.core.waiting import wait_event
from chutes.devcluster.durations import NS_PER_S, ns_to_s
from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.nodes import Node
from chutes.devcluster.nomad.podman import DockerDriver, DriverError
from chutes.devcluster.nomad.records import Allocation, TaskEvent, TaskState, now_ns
from chutes.devcluster.nomad.services import ServiceRegistrar
from chutes.devcluster.nomad.taskenv import TaskDirs, host_environment, interpolate, task_env
from chutes.devcluster.nomad.template_runner import RESTART_REASON, TaskTemplates
from chutes.devcluster.nomad.templates import TemplateFailed
from chutes.devcluster.nomad.variables import VariableStore

log = logging.getLogger(__name__)

SIGNALS = {name: getattr(signal, name) for name in dir(signal) if name.startswith("SIG") and "_" not in name}


class ProcessTable:
    """Process groups of running tasks, kept on disk so a devcluster killed hard can reap them on restart."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.groups: dict[int, str] = {}

    def add(self, pgid: int, alloc_id: str) -> None:
        self.groups[pgid] = alloc_id
        self._save()

    def remove(self, pgid: int) -> None:
        self.groups.pop(pgid, None)
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({str(k): v for k, v in self.groups.items()}))
        tmp.replace(self.path)

    def reap_leftovers(self) -> int:
        """Kill groups left by a previous devcluster that died without stopping its tasks."""
        if self.path is None or not self.path.exists():
            return 0
        try:
            recorded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0
        killed = 0
        for pgid_text, alloc_id in recorded.items():
            pgid = int(pgid_text)
            try:
                environ = Path(f"/proc/{pgid}/environ").read_bytes()
            except OSError:
                continue
            if f"NOMAD_ALLOC_ID={alloc_id}".encode() not in environ.split(b"\0"):
                continue  # the pid was reused by something else: leave it alone
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
                killed += 1
        self.path.unlink(missing_ok=True)
        return killed


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class TaskRunner:
    def __init__(self, owner: AllocRunner, task: models.Task, dirs: TaskDirs) -> None:
        self.owner = owner
        self.task = task
        self.name = task.Name or ""
        self.dirs = dirs
        self.proc: asyncio.subprocess.Process | None = None
        self.exited = asyncio.Event()
        self.restart_times: list[float] = []
        # Template blocks (template_runner.py): rendered before each start; a change may restart the task.
        variables = owner.variables
        self.templates = TaskTemplates.of(owner, task, variables) if variables is not None else None
        self.template_env: dict[str, str] = {}
        self.restart_requested = False
        self.container = task.Driver == "docker"

    @property
    def state(self) -> TaskState:
        return self.owner.alloc.task_states[self.name]

    def _event(self, kind: str, message: str = "", **kw: object) -> None:
        self.state.event(TaskEvent.model_validate({"type": kind, "message": message, **kw}))
        self.owner.changed()

    async def run(self) -> None:
        job_type = self.owner.job.Type or "service"
        while not self.owner.stopping:
            exit_code: int | None = None
            failure = ""
            if self.templates is not None:
                try:
                    rendered = await self.templates.prestart(self.owner.stop_event)
                except TemplateFailed as exc:
                    self._event("Task hook failed", f'prestart hook "template" failed: {exc}', failed=True)
                    self._finish(failed=True)
                    self.owner.sibling_failed(self)
                    return
                if rendered is None:
                    break
                self.template_env = rendered
            try:
                await self._start()
            except OSError as exc:
                failure = f"failed to launch command: {exc.strerror or exc}"
                self._event("Driver Failure", failure, details={"driver_error": failure}, failed=False)
            except DriverError as exc:
                failure = str(exc)
                self._event("Driver Failure", failure, details={"driver_error": failure}, failed=False)
            else:
                assert self.proc is not None
                if self.owner.stopping:
                    # Stopped while the process was being spawned: kill() found no process to signal then.
                    self.owner.spawn_kill(self, "allocation stopped while the task started")
                exit_code = await self.proc.wait()
                self.owner.processes.remove(self.proc.pid)
                _kill_group(self.proc.pid, signal.SIGKILL)
                if self.container:
                    # Whatever ended it (exit, kill, `podman kill` from outside), no container stays behind.
                    await self.owner.docker_driver().remove(self.owner.alloc.id, self.name)
                self.exited.set()
                sig = -exit_code if exit_code < 0 else 0
                self._event(
                    "Terminated",
                    f"Exit Code: {exit_code}" + (f", Signal: {sig}" if sig else ""),
                    exit_code=exit_code if exit_code >= 0 else 128 + sig,
                    signal=sig,
                    details={"exit_code": str(exit_code)},
                )
            if self.owner.stopping:
                break
            if self.restart_requested:  # a template changed: start again now, outside the restart policy
                self.restart_requested = False
                self.state.state = "pending"
                self.state.restarts += 1
                self.state.last_restart_ns = now_ns()
                self._event("Restarting", "Task restarting in 0s",
                            details={"restart_reason": RESTART_REASON, "start_delay": "0"})  # fmt: skip
                continue
            if exit_code == 0 and job_type in ("batch", "sysbatch"):
                self._finish(failed=False)
                return
            delay = self._restart_delay()
            if delay is None:
                policy = self.task.RestartPolicy or models.RestartPolicy()
                reason = f"Exceeded allowed attempts {policy.Attempts} in interval {ns_to_s(policy.Interval, 0):g}s"
                self._event("Not Restarting", reason, details={"restart_reason": reason}, failed=True)
                self._finish(failed=True)
                self.owner.sibling_failed(self)
                return
            self.state.state = "pending"
            self.state.restarts += 1
            self.state.last_restart_ns = now_ns()
            message = f"Task restarting in {delay:g}s"
            self._event(
                "Restarting",
                message,
                details={"restart_reason": "Restart within policy", "start_delay": str(int(delay * NS_PER_S))},
            )
            await wait_event(self.owner.stop_event, delay)
        if self.state.state != "dead":
            self._finish(failed=False)

    def _restart_delay(self) -> float | None:
        """Seconds until the next start, or None when the restart policy says the task has failed."""
        policy = self.task.RestartPolicy or models.RestartPolicy()
        attempts = policy.Attempts or 0
        interval = ns_to_s(policy.Interval, 0.0)
        delay = ns_to_s(policy.Delay, 0.0)
        now = time.monotonic()
        self.restart_times = [t for t in self.restart_times if interval <= 0 or now - t < interval]
        if len(self.restart_times) < attempts:
            self.restart_times.append(now)
            return delay
        if (policy.Mode or "fail") == "delay" and interval > 0 and self.restart_times:
            wait = max(delay, interval - (now - self.restart_times[0]))
            self.restart_times = [now + wait]
            return wait
        return None

    def _finish(self, failed: bool) -> None:
        self.state.state = "dead"
        self.state.failed = failed
        self.state.finished_ns = now_ns()
        self.owner.changed()

    async def _start(self) -> None:
        if self.container:
            await self._start_container()
            return
        alloc, job, node = self.owner.alloc, self.owner.job, self.owner.node
        group = self.owner.group
        env = task_env(alloc, job, group, self.task, node, self.dirs)
        env.update(self.template_env)  # as in Nomad, template env vars override the task's Env
        self.owner.env[self.name] = env
        config = self.task.Config or {}
        command = interpolate(str(config.get("command", "")), env, node)
        args = [interpolate(str(a), env, node) for a in config.get("args") or []]
        resolved = self._resolve(command, env)
        full_env = {**host_environment(os.environ), **env}
        stdout, stderr = self._open_logs()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                resolved,
                *args,
                env=full_env,
                cwd=str(self.dirs.task_dir.parent),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            stdout.close()
            stderr.close()
        self._started(self.proc)

    def _started(self, proc: asyncio.subprocess.Process) -> None:
        self.exited.clear()
        self.owner.processes.add(proc.pid, self.owner.alloc.id)
        self.state.state = "running"
        self.state.started_ns = now_ns()
        self._event("Started", "Task started by client")
        self.owner.task_running()

    async def _start_container(self) -> None:
        """Pull, create and attach to the task's container; a stop during a long pull abandons the start."""
        owner = self.owner
        stdout, stderr = self._open_logs()
        try:
            starting = asyncio.ensure_future(
                owner.docker_driver().start(
                    owner.alloc, owner.job, owner.group, self.task, owner.node, self.dirs, (stdout, stderr),
                    lambda kind, message: self._event(kind, message), template_env=self.template_env,
                )
            )  # fmt: skip
            stopped = asyncio.ensure_future(owner.stop_event.wait())
            try:
                await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError, DriverError):
                    await starting
                await owner.docker_driver().remove(owner.alloc.id, self.name)
                raise DriverError("the allocation was stopped while its container was starting")
            proc, env = starting.result()
        finally:
            stdout.close()
            stderr.close()
        self.proc = proc
        owner.env[self.name] = env
        self._started(proc)

    def _open_logs(self) -> tuple[BinaryIO, BinaryIO]:
        """Nomad's per-task log files (no rotation); the child writes to them directly."""
        logs = self.dirs.logs_dir
        return (logs / f"{self.name}.stdout.0").open("ab"), (logs / f"{self.name}.stderr.0").open("ab")

    def _resolve(self, command: str, env: dict[str, str]) -> str:
        if os.sep in command:
            path = Path(command)
            if not path.is_absolute():
                path = self.dirs.task_dir.parent / path
            return str(path)
        found = shutil.which(command, path=os.environ.get("PATH"))
        if found is None:
            raise FileNotFoundError(2, f"executable {command!r} not found in $PATH", command)
        return found

    async def restart(self, reason: str) -> None:
        """Restart the running task (a template's ``change_mode = "restart"``): its services go first."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self.restart_requested = True
        self._event("Restart Signaled", reason)
        self.owner.deregister_services()
        await self.kill(reason)

    async def kill(self, reason: str) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        sig_name = (self.task.KillSignal or "SIGTERM").upper()
        sig = SIGNALS.get(sig_name if sig_name.startswith("SIG") else f"SIG{sig_name}", signal.SIGTERM)
        timeout = ns_to_s(self.task.KillTimeout, 5.0)
        self._event(
            "Killing", f"Sent interrupt. Waiting {timeout:g}s before force killing", details={"kill_reason": reason}
        )
        if self.container:
            await self._kill_container(sig, timeout)
        else:
            _kill_group(proc.pid, sig)
            if not await wait_event(self.exited, timeout):
                _kill_group(proc.pid, signal.SIGKILL)
                await self.exited.wait()
        self._event("Killed", "Task successfully killed")

    async def _kill_container(self, sig: int, kill_timeout_s: float) -> None:
        """``podman kill`` with the kill signal, KillTimeout, then SIGKILL; the attached process then exits."""
        driver, alloc_id = self.owner.docker_driver(), self.owner.alloc.id
        await driver.signal(alloc_id, self.name, signal.Signals(sig).name)
        if await wait_event(self.exited, kill_timeout_s):
            return
        await driver.signal(alloc_id, self.name, "SIGKILL")
        if not await wait_event(self.exited, 10.0):
            # The attached client hangs on a container that is gone: end it, run() removes what is left.
            if self.proc is not None:
                _kill_group(self.proc.pid, signal.SIGKILL)
            await self.exited.wait()


class AllocRunner:
    def __init__(
        self,
        alloc: Allocation,
        job: models.Job,
        node: Node,
        root: Path,
        processes: ProcessTable,
        registrar: ServiceRegistrar,
        notify: Callable[[Allocation], None],
        docker: DockerDriver | None = None,
        variables: VariableStore | None = None,
    ) -> None:
        self.variables = variables
        self.alloc = alloc
        self.docker = docker
        self.job = job
        self.node = node
        self.root = root
        self.processes = processes
        self.registrar = registrar
        self.notify = notify
        self.group = next(g for g in job.TaskGroups or [] if g.Name == alloc.task_group)
        self.stop_event = asyncio.Event()
        self.env: dict[str, dict[str, str]] = {}
        self.tasks: list[TaskRunner] = []
        self._main: asyncio.Task[None] | None = None
        self._services_registered = False
        self._killers: set[asyncio.Task[None]] = set()

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def docker_driver(self) -> DockerDriver:
        if self.docker is None:  # placement only puts docker tasks on nodes that have the driver
            raise DriverError("the docker driver is not enabled on this devcluster (--docker-driver)")
        return self.docker

    def changed(self) -> None:
        self._update_status()
        self.notify(self.alloc)

    def start(self, restarted: bool = False) -> None:
        self._main = asyncio.create_task(self._run(restarted), name=f"alloc {self.alloc.id}")

    async def _run(self, restarted: bool) -> None:
        try:
            self._prepare(restarted)
            self.tasks = [
                TaskRunner(self, task, TaskDirs.of(self.root, task.Name or "")) for task in self.group.Tasks or []
            ]
            await asyncio.gather(*(t.run() for t in self.tasks))
        except Exception as exc:
            log.exception("allocation %s failed to run", self.alloc.id)
            for state in self.alloc.task_states.values():
                if state.state != "dead":
                    state.event(TaskEvent(type="Setup Failure", message=str(exc), failed=True))
                    state.state, state.failed = "dead", True
        finally:
            self._deregister()
            self.changed()

    def _prepare(self, restarted: bool) -> None:
        for task in self.group.Tasks or []:
            name = task.Name or ""
            state = self.alloc.task_states.setdefault(name, TaskState())
            if restarted:
                state.state = "pending"
                state.event(TaskEvent(type="Restarting", message="The devcluster restarted; starting the task again"))
            else:
                state.event(TaskEvent(type="Received", message="Task received by client"))
            dirs = TaskDirs.of(self.root, name)
            dirs.create()
            state.event(TaskEvent(type="Task Setup", message="Building Task Directory"))
            if task.DispatchPayload is not None and task.DispatchPayload.File and self.job.Payload:
                target = (dirs.task_dir / task.DispatchPayload.File).resolve()
                if dirs.task_dir.resolve() not in target.parents:
                    raise ValueError(f"DispatchPayload.File {task.DispatchPayload.File!r} leaves the task dir")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(self.job.Payload))
        self.changed()

    def task_running(self) -> None:
        if all(t.state.state == "running" for t in self.tasks) and not self._services_registered:
            env = next(iter(self.env.values()), {})
            try:
                self.registrar.register(self.alloc, self.job, self.node, env)
            except Exception:
                log.exception("registering services of %s failed", self.alloc.id)
            self._services_registered = True
        self.changed()

    def spawn_kill(self, task: TaskRunner, reason: str) -> None:
        killer = asyncio.create_task(task.kill(reason))
        self._killers.add(killer)
        killer.add_done_callback(self._killers.discard)

    def sibling_failed(self, failed: TaskRunner) -> None:
        """A task failed for good: Nomad kills the other tasks of the allocation."""
        if not self.stopping:
            self.stop_event.set()
            for task in self.tasks:
                if task is not failed:
                    self.spawn_kill(task, f"Sibling task {failed.name} failed")

    @property
    def services_registered(self) -> bool:
        return self._services_registered

    def deregister_services(self) -> None:
        self._deregister()

    def task_event(self, task: str, kind: str, message: str) -> None:
        state = self.alloc.task_states.get(task)
        if state is not None:
            state.event(TaskEvent(type=kind, message=message))
            self.changed()

    async def restart_task(self, task: str, reason: str) -> None:
        for runner in self.tasks:
            if runner.name == task:
                await runner.restart(reason)

    def _deregister(self) -> None:
        if self._services_registered:
            self.registrar.deregister(self.alloc.id)
            self._services_registered = False

    async def stop(self, reason: str) -> None:
        """Deregister services, then kill every task (signal, KillTimeout, SIGKILL) and wait for the allocation."""
        self.stop_event.set()
        self._deregister()
        await asyncio.gather(*(t.kill(reason) for t in self.tasks), return_exceptions=True)
        if self._main is not None:
            await asyncio.gather(self._main, return_exceptions=True)

    def _update_status(self) -> None:
        states = list(self.alloc.task_states.values())
        if not states:
            return
        old = self.alloc.client_status
        if all(s.state == "dead" for s in states):
            new = "failed" if any(s.failed for s in states) else "complete"
        elif any(s.state == "dead" and s.failed for s in states):
            new = "failed" if all(s.state == "dead" for s in states) else old
        elif all(s.state == "running" for s in states) or (
            any(s.state == "running" for s in states) and all(s.state in ("running", "dead") for s in states)
        ):
            new = "running"
        else:
            new = "pending" if old == "pending" else old
        if new != old:
            self.alloc.client_status = new
            self.alloc.client_description = {
                "running": "Tasks are running",
                "complete": "All tasks have completed",
                "failed": "Failed tasks",
            }.get(new, "No tasks have started")

    @property
    def done(self) -> bool:
        return self._main is not None and self._main.done()
