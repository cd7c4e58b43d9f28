"""Running a task's ``template`` blocks: render before every start, watch the variables, act on a change.

Before a task starts, each of its templates is rendered into ``DestPath`` (relative to the task directory,
``secrets/`` and ``local/`` as in Nomad) with ``Perms``; ``Envvars`` templates are parsed as an env file and
merged over the task's ``Env``. A variable that is missing, or that the task may not read (only Nomad's implicit
``nomad/jobs/<job>[/<group>[/<task>]]`` paths), blocks the start with the task event Nomad records
(``Missing: nomad.var.block(...)``) until it appears.

When a variable changes, every running task that reads it renders again; if the bytes changed, the file is
rewritten and its ``ChangeMode`` applies: ``noop`` (nothing more), ``signal`` (``ChangeSignal`` to the task),
``restart``. Restarts go through :class:`RestartQueue`: **one allocation of a task group at a time**, the next
once the restarted one runs and its checks pass (or its group's ``Update.HealthyDeadline`` passes), so a service
with two instances never has both down. Nomad restarts each allocation on its own after a random ``Splay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.taskenv import TaskDirs, task_env
from chutes.devcluster.nomad.templates import (
    Blocked,
    EnvParseError,
    Parsed,
    TemplateFailed,
    implicit_access,
    parse,
    parse_env,
    render,
)
from chutes.devcluster.nomad.variables import VariableStore, topic

if TYPE_CHECKING:
    from chutes.devcluster.nomad.executor import AllocRunner, TaskRunner

log = logging.getLogger(__name__)

DEFAULT_HEALTHY_DEADLINE_S = 300.0
CHANGE_PRIORITY = {"noop": 0, "signal": 1, "restart": 2}
RESTART_REASON = "Template with change_mode restart re-rendered"


@dataclass
class _One:
    spec: models.Template
    parsed: Parsed
    rendered: str | None = None


@dataclass
class TaskTemplates:
    """The templates of one task of one allocation."""

    variables: VariableStore
    namespace: str
    job_id: str  # the parent's ID for a dispatched job, as Nomad's workload identity uses it
    group: str
    task: str
    task_root: Path  # <alloc dir>/<task>: DestPath is relative to it
    event: Callable[[str, str], None]
    items: list[_One] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: the task's environment before templates (``NOMAD_*``, meta, ``Env``): what ``env "NAME"`` reads
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, runner: AllocRunner, task: models.Task, variables: VariableStore) -> TaskTemplates | None:
        if not task.Templates:
            return None
        job = runner.job
        name = task.Name or ""
        templates = cls(
            variables=variables,
            namespace=job.Namespace or "default",
            job_id=job.ParentID or job.ID or "",
            group=runner.group.Name or "",
            task=name,
            task_root=runner.root / name,
            event=lambda kind, message: runner.task_event(name, kind, message),
            environment=task_env(
                runner.alloc, job, runner.group, task, runner.node, TaskDirs.of(runner.root, name),
                in_container=task.Driver == "docker",
            ),
        )  # fmt: skip
        for spec in task.Templates:
            templates.items.append(_One(spec, parse(spec.EmbeddedTmpl or "", spec.LeftDelim, spec.RightDelim)))
        return templates

    def topics(self) -> list[str]:
        return sorted({topic(ns, path) for one in self.items for ns, path in one.parsed.variables(self.namespace)})

    def reads(self, namespace: str, path: str) -> bool:
        return any((namespace, path) in one.parsed.variables(self.namespace) for one in self.items)

    def _lookup(self, namespace: str, path: str) -> dict[str, str]:
        if namespace != self.namespace or not implicit_access(path, self.job_id, self.group, self.task):
            raise Blocked(path, namespace, "a task may read only nomad/jobs/<its job>[/<group>[/<task>]]")
        var = self.variables.get(namespace, path)
        if var is None:
            raise Blocked(path, namespace)
        return var.items

    def _render(self, one: _One) -> str:
        return render(
            one.parsed,
            self._lookup,
            self.namespace,
            missing_key_error=bool(one.spec.ErrMissingKey),
            env=self.environment,
        )

    def _write(self, one: _One, text: str) -> None:
        target = (self.task_root / (one.spec.DestPath or "")).resolve()
        alloc_dir = self.task_root.parent.resolve()
        if alloc_dir not in target.parents:
            raise TemplateFailed(f"destination {one.spec.DestPath!r} escapes the allocation directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = int(one.spec.Perms or "0644", 8)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(target, mode)

    def _merge_env(self) -> None:
        env: dict[str, str] = {}
        for one in self.items:
            if one.spec.Envvars and one.rendered is not None:
                try:
                    env.update(parse_env(one.rendered))
                except EnvParseError as exc:
                    raise TemplateFailed(f"Template failed to read environment variables: {exc}") from None
        self.env = env

    async def prestart(self, stopping: asyncio.Event) -> dict[str, str] | None:
        """Render every template (waiting while one is blocked); the env they add, or None when stopping."""
        reported: set[str] = set()
        while True:
            index = self.variables.index.of(*self.topics())
            try:
                for one in self.items:
                    text = self._render(one)
                    self._write(one, text)
                    one.rendered = text
            except Blocked as blocked:
                if str(blocked) not in reported:
                    reported.add(str(blocked))
                    self.event("Template", str(blocked))
                waiter = asyncio.ensure_future(self.variables.index.wait_topics(self.topics(), index, 30.0))
                stopper = asyncio.ensure_future(stopping.wait())
                await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
                for fut in (waiter, stopper):
                    fut.cancel()
                if stopping.is_set():
                    return None
                continue
            self._merge_env()
            return dict(self.env)

    def changed(self, namespace: str, path: str) -> str | None:
        """Render again after ``path`` changed; the strongest ChangeMode of the templates whose output
        changed (their files are rewritten now), or None."""
        strongest: str | None = None
        for one in self.items:
            if one.rendered is None or (namespace, path) not in one.parsed.variables(self.namespace) or one.spec.Once:
                continue
            try:
                text = self._render(one)
            except Blocked:
                continue  # deleted: the template waits for it again, the task keeps running (as Nomad)
            except TemplateFailed as exc:
                self.event("Template", f"Template failed: {exc}")
                continue
            if text == one.rendered:
                continue
            self._write(one, text)
            one.rendered = text
            mode = one.spec.ChangeMode or "restart"
            if strongest is None or CHANGE_PRIORITY[mode] > CHANGE_PRIORITY[strongest]:
                strongest = mode
            if mode != "restart":
                self.event("Template", "Template re-rendered")
        return strongest

    def change_signal(self) -> int:
        for one in self.items:
            if (one.spec.ChangeMode or "restart") == "signal" and one.spec.ChangeSignal:
                name = one.spec.ChangeSignal.upper()
                return int(getattr(signal, name if name.startswith("SIG") else f"SIG{name}", signal.SIGHUP))
        return int(signal.SIGHUP)


@dataclass
class RestartQueue:
    """Template restarts of one task group's allocations, one at a time (see the module docstring)."""

    spawn: Callable[[Coroutine[Any, Any, None]], None]
    healthy: Callable[[AllocRunner], bool]
    pending: dict[tuple[str, str], dict[str, tuple[AllocRunner, str]]] = field(default_factory=dict)
    workers: set[tuple[str, str]] = field(default_factory=set)

    def request(self, runner: AllocRunner, task: str) -> None:
        key = (runner.alloc.job_id, runner.alloc.task_group)
        self.pending.setdefault(key, {})[runner.alloc.id] = (runner, task)
        if key not in self.workers:
            self.workers.add(key)
            self.spawn(self._work(key))

    async def _work(self, key: tuple[str, str]) -> None:
        try:
            while self.pending.get(key):
                alloc_id = min(self.pending[key], key=lambda a: self.pending[key][a][0].alloc.index)
                runner, task = self.pending[key].pop(alloc_id)
                if runner.stopping or runner.done:
                    continue
                try:
                    await runner.restart_task(task, RESTART_REASON)
                    await self._settle(runner)
                except Exception:
                    log.exception("template restart of %s/%s failed", alloc_id, task)
        finally:
            self.workers.discard(key)
            if self.pending.get(key):  # asked for while the worker was finishing
                self.workers.add(key)
                self.spawn(self._work(key))

    async def _settle(self, runner: AllocRunner) -> None:
        """Until the restarted allocation runs with passing checks, or its healthy deadline passes."""
        update = runner.group.Update
        deadline_s = (update.HealthyDeadline / 1e9) if update and update.HealthyDeadline else DEFAULT_HEALTHY_DEADLINE_S
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        while loop.time() < deadline and not runner.stopping and not runner.done:
            if self.healthy(runner):
                return
            await asyncio.sleep(0.1)


async def signal_task(task: TaskRunner, sig: int) -> None:
    """A template's ``change_mode = "signal"``: ``sig`` to the task's process group, or into its container."""
    proc = task.proc
    if proc is None or proc.returncode is not None:
        return
    if task.container:  # the attached `podman start` does not proxy signals: podman kill sends it inside
        await task.owner.docker_driver().signal(task.owner.alloc.id, task.name, signal.Signals(sig).name)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
