"""Job validation and defaults, as Nomad's ``Job.Canonicalize`` and ``Job.Validate`` apply them at register."""

from __future__ import annotations

import re

from chutes.devcluster.durations import NS_PER_S
from chutes.devcluster.nomad import models, templates
from chutes.devcluster.nomad.constraints import OPERATORS
from chutes.devcluster.nomad.docker_config import docker_config_problems
from chutes.devcluster.nomad.placement import SUPPORTED_DRIVERS
from chutes.devcluster.nomad.scheduler import update_strategy

JOB_TYPES = ("service", "batch", "system", "sysbatch")
_LABEL = re.compile(r"^[a-zA-Z0-9_]+$")
_MINUTE = 60 * NS_PER_S


class JobInvalid(ValueError):
    """A job Nomad would refuse at registration; the message names every problem."""


def _restart_default(job_type: str) -> models.RestartPolicy:
    if job_type in ("batch", "sysbatch"):
        return models.RestartPolicy(Attempts=3, Interval=24 * 60 * _MINUTE, Delay=15 * NS_PER_S, Mode="fail")
    return models.RestartPolicy(Attempts=2, Interval=30 * _MINUTE, Delay=15 * NS_PER_S, Mode="fail")


def _reschedule_default(job_type: str) -> models.ReschedulePolicy:
    if job_type in ("batch", "sysbatch"):
        return models.ReschedulePolicy(
            Attempts=1, Interval=24 * 60 * _MINUTE, Delay=5 * NS_PER_S, DelayFunction="constant", MaxDelay=0,
            Unlimited=False,
        )  # fmt: skip
    return models.ReschedulePolicy(
        Attempts=0, Interval=0, Delay=30 * NS_PER_S, DelayFunction="exponential", MaxDelay=60 * _MINUTE,
        Unlimited=True,
    )  # fmt: skip


def _merge_restart(base: models.RestartPolicy, over: models.RestartPolicy | None) -> models.RestartPolicy:
    if over is None:
        return base.model_copy()
    data = base.model_dump()
    data.update({k: v for k, v in over.model_dump().items() if v is not None})
    return models.RestartPolicy(**data)


def canonicalize(job: models.Job) -> models.Job:
    """Fill Nomad's defaults into a copy of ``job`` (validated first)."""
    validate(job)
    job = job.model_copy(deep=True)
    job.Name = job.Name or job.ID
    job.Namespace = job.Namespace or "default"
    job.Region = job.Region or "global"
    job.Type = job.Type or "service"
    job.Priority = 50 if job.Priority is None else job.Priority
    job.Datacenters = job.Datacenters or ["*"]
    job.NodePool = job.NodePool or "default"
    job.AllAtOnce = bool(job.AllAtOnce)
    job.Meta = job.Meta or None
    if job.ParameterizedJob is not None:
        job.ParameterizedJob.Payload = job.ParameterizedJob.Payload or "optional"
    for group in job.TaskGroups or []:
        group.Count = 1 if group.Count is None else group.Count
        group_restart = _merge_restart(_restart_default(job.Type), group.RestartPolicy)
        group.RestartPolicy = group_restart
        resched = _reschedule_default(job.Type).model_dump()
        for src in (job.Reschedule, group.ReschedulePolicy):
            if src is not None:
                resched.update({k: v for k, v in src.model_dump().items() if v is not None})
        group.ReschedulePolicy = models.ReschedulePolicy(**resched)
        group.EphemeralDisk = group.EphemeralDisk or models.EphemeralDisk(SizeMB=300, Sticky=False, Migrate=False)
        for service in group.Services or []:
            _canonical_service(service)
        for task in group.Tasks or []:
            task.RestartPolicy = _merge_restart(group_restart, task.RestartPolicy)
            task.KillTimeout = 5 * NS_PER_S if task.KillTimeout is None else task.KillTimeout
            task.LogConfig = task.LogConfig or models.LogConfig(MaxFiles=10, MaxFileSizeMB=10)
            task.Resources = task.Resources or models.Resources()
            task.Resources.CPU = 100 if task.Resources.CPU is None else task.Resources.CPU
            task.Resources.MemoryMB = 300 if task.Resources.MemoryMB is None else task.Resources.MemoryMB
            for device in task.Resources.Devices or []:
                device.Count = 1 if device.Count is None else device.Count
            for service in task.Services or []:
                _canonical_service(service)
    return job


def _canonical_service(service: models.Service) -> None:
    service.Provider = service.Provider or "consul"
    service.AddressMode = service.AddressMode or "auto"
    for check in service.Checks or []:
        check.Timeout = check.Timeout or 2 * NS_PER_S
        check.Method = check.Method or ("GET" if (check.Type or "") == "http" else "")


def validate(job: models.Job) -> None:
    """Raise JobInvalid listing every problem Nomad's validation would report for what the devcluster runs."""
    problems: list[str] = []
    if not job.ID:
        problems.append("Missing job ID")
    elif " " in job.ID or "\x00" in job.ID:
        problems.append("Job ID contains a space or null character")
    job_type = job.Type or "service"
    if job_type not in JOB_TYPES:
        problems.append(f"Invalid job type: {job_type!r}")
    if job.ParameterizedJob is not None and job_type not in ("batch", "sysbatch"):
        problems.append("Parameterized job can only be used with batch or sysbatch scheduler")
    if job.ParameterizedJob is not None and (job.ParameterizedJob.Payload or "optional") not in (
        "optional", "required", "forbidden",
    ):  # fmt: skip
        problems.append("ParameterizedJob.Payload must be optional, required or forbidden")
    if job.Periodic is not None and job.Periodic.Enabled:
        problems.append("periodic jobs are not supported by the devcluster")
    if job.Priority is not None and not 1 <= job.Priority <= 100:
        problems.append("Job priority must be between [1, 100]")
    groups = job.TaskGroups or []
    if not groups:
        problems.append("Missing job task groups")
    _constraints(job.Constraints, "job", problems)
    _affinities(job.Affinities, "job", problems)
    seen: set[str] = set()
    for i, group in enumerate(groups):
        where = f"Task group {group.Name or i}"
        if not group.Name:
            problems.append(f"Job task group {i + 1} missing name")
        elif group.Name in seen:
            problems.append(f"Job task group {i + 1} redefines '{group.Name}' from group {i}")
        seen.add(group.Name or "")
        if group.Count is not None and group.Count < 0:
            problems.append(f"{where}: Task group count can't be negative")
        if group.Scaling is not None and group.Scaling.Max is not None and group.Count is not None:
            low = group.Scaling.Min if group.Scaling.Min is not None else group.Count
            if not low <= group.Count <= group.Scaling.Max:
                problems.append(
                    f"{where}: Count {group.Count} is outside the scaling policy [{low}, {group.Scaling.Max}]"
                )
        _constraints(group.Constraints, where, problems)
        _affinities(group.Affinities, where, problems)
        _update(job, group, where, problems)
        labels = _port_labels(group, where, problems)
        for service in group.Services or []:
            _service(service, labels, where, problems, task_names={t.Name or "" for t in group.Tasks or []})
        tasks = group.Tasks or []
        if not tasks:
            problems.append(f"{where}: Missing tasks for task group")
        task_names: set[str] = set()
        for j, task in enumerate(tasks):
            twhere = f"{where}, task {task.Name or j}"
            if not task.Name:
                problems.append(f"{twhere}: Missing task name")
            elif task.Name in task_names:
                problems.append(f"{where}: Task {j + 1} redefines '{task.Name}'")
            task_names.add(task.Name or "")
            if not task.Driver:
                problems.append(f"{twhere}: Missing task driver")
            elif task.Driver == "docker":
                problems += [f"{twhere}: docker config: {p}" for p in docker_config_problems(task.Config)]
            elif task.Driver in SUPPORTED_DRIVERS:
                command = (task.Config or {}).get("command")
                if not isinstance(command, str) or not command:
                    problems.append(f"{twhere}: raw_exec needs Config.command (a string)")
                args = (task.Config or {}).get("args")
                if args is not None and (not isinstance(args, list) or not all(isinstance(a, str) for a in args)):
                    problems.append(f"{twhere}: Config.args must be a list of strings")
            if task.KillTimeout is not None and task.KillTimeout < 0:
                problems.append(f"{twhere}: KillTimeout must be a positive value")
            _constraints(task.Constraints, twhere, problems)
            _affinities(task.Affinities, twhere, problems)
            problems.extend(templates.problems(task.Templates, twhere))
            for device in (task.Resources.Devices if task.Resources else None) or []:
                if not device.Name:
                    problems.append(f"{twhere}: device request is missing Name")
                if device.Count is not None and device.Count < 1:
                    problems.append(f"{twhere}: device {device.Name} Count must be at least 1")
                _constraints(device.Constraints, f"{twhere} device {device.Name}", problems)
                _affinities(device.Affinities, f"{twhere} device {device.Name}", problems)
            for service in task.Services or []:
                _service(service, labels, twhere, problems, task_names=set())
            if task.DispatchPayload is not None and task.DispatchPayload.File:
                path = task.DispatchPayload.File
                if path.startswith("/") or ".." in path.split("/"):
                    problems.append(f"{twhere}: DispatchPayload.File must be a relative path inside the task dir")
    if problems:
        raise JobInvalid("; ".join(problems))


def _update(job: models.Job, group: models.TaskGroup, where: str, problems: list[str]) -> None:
    """Nomad's ``UpdateStrategy.Validate`` on the group's merged strategy."""
    strategy = update_strategy(job, group)
    if strategy is None:
        return
    if (strategy.HealthCheck or "checks") not in ("checks", "task_states", "manual"):
        problems.append(f'{where}: Invalid health check given: "{strategy.HealthCheck}"')
    if (strategy.MinHealthyTime or 0) >= (strategy.HealthyDeadline or 0):
        problems.append(f"{where}: Minimum healthy time must be less than healthy deadline")
    if strategy.ProgressDeadline and (strategy.HealthyDeadline or 0) >= strategy.ProgressDeadline:
        problems.append(f"{where}: Healthy deadline must be less than progress deadline")
    if strategy.AutoPromote and not strategy.Canary:
        problems.append(f"{where}: Auto Promote requires a Canary count greater than zero")


def _constraints(items: list[models.Constraint] | None, where: str, problems: list[str]) -> None:
    for c in items or []:
        op = c.Operand or "="
        if op not in OPERATORS:
            problems.append(f"{where}: Unknown constraint type {op!r}")
        elif op not in ("distinct_hosts", "distinct_property", "is_set", "is_not_set") and not c.LTarget:
            problems.append(f"{where}: No LTarget provided but is required by constraint")


def _affinities(items: list[models.Affinity] | None, where: str, problems: list[str]) -> None:
    for a in items or []:
        if a.Weight is not None and (a.Weight == 0 or not -100 <= a.Weight <= 100):
            problems.append(f"{where}: Affinity weight must be within the range [-100,100] and non-zero")
        if (a.Operand or "=") not in OPERATORS:
            problems.append(f"{where}: Unknown affinity operator {a.Operand!r}")


def _port_labels(group: models.TaskGroup, where: str, problems: list[str]) -> set[str]:
    labels: set[str] = set()
    networks = list(group.Networks or [])
    for task in group.Tasks or []:
        networks += (task.Resources.Networks if task.Resources else None) or []
    for network in networks:
        if (network.Mode or "host") not in ("host", ""):
            problems.append(f"{where}: network mode {network.Mode!r} is not supported by the devcluster (use host)")
        for port in [*(network.DynamicPorts or []), *(network.ReservedPorts or [])]:
            if not port.Label or not _LABEL.match(port.Label):
                problems.append(f"{where}: port label {port.Label!r} must be letters, digits and underscores")
            elif port.Label in labels:
                problems.append(f"{where}: port label {port.Label!r} defined twice")
            labels.add(port.Label or "")
        for port in network.ReservedPorts or []:
            if not port.Value or not 0 < port.Value < 65536:
                problems.append(f"{where}: reserved port {port.Label!r} needs a Value between 1 and 65535")
    return labels


def _service(service: models.Service, labels: set[str], where: str, problems: list[str], task_names: set[str]) -> None:
    if (service.Provider or "consul") not in ("consul", "nomad"):
        problems.append(f"{where}: Service {service.Name!r} has invalid provider {service.Provider!r}")
    label = service.PortLabel or ""
    if label and not label.isdigit() and label not in labels:
        problems.append(f"{where}: service {service.Name!r} uses undefined port label {label!r}")
    for check in service.Checks or []:
        kind = (check.Type or "").lower()
        if kind not in ("http", "tcp"):
            problems.append(
                f"{where}: service {service.Name!r} check type {check.Type!r} is not supported by the devcluster "
                "(use http or tcp)"
            )
        if not check.Interval or check.Interval <= 0:
            problems.append(f"{where}: service {service.Name!r} check needs a positive Interval (nanoseconds)")
        if kind == "http" and not check.Path:
            problems.append(f"{where}: service {service.Name!r} http check needs a Path")
        check_label = check.PortLabel or ""
        if check_label and not check_label.isdigit() and check_label not in labels:
            problems.append(f"{where}: service {service.Name!r} check uses undefined port label {check_label!r}")
