"""Nomad ``service`` blocks registered in the embedded Consul, with Nomad's service and check IDs."""

from __future__ import annotations

import hashlib

from chutes.devcluster.consul.catalog import Catalog
from chutes.devcluster.consul.records import CRITICAL, STATUSES, Check, CheckDefinition, Service
from chutes.devcluster.durations import ns_to_s
from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.nodes import Node
from chutes.devcluster.nomad.records import Allocation
from chutes.devcluster.nomad.taskenv import interpolate


def service_id(alloc_id: str, owner: str, service: str, port_label: str) -> str:
    """``_nomad-task-<alloc>-<task>-<service>-<port>``; a group service's owner is ``group-<group>``."""
    return f"_nomad-task-{alloc_id}-{owner}-{service}-{port_label}"


def check_id(sid: str, check: models.ServiceCheck, n: int) -> str:
    digest = hashlib.sha1(f"{sid}/{check.Name or ''}/{n}".encode(), usedforsecurity=False).hexdigest()
    return f"_nomad-check-{digest}"


def _port(alloc: Allocation, label: str) -> int:
    if label.isdigit():
        return int(label)
    for port in alloc.ports:
        if port["Label"] == label:
            return int(port["Value"])
    return 0


class ServiceRegistrar:
    """Registers an allocation's group and task services when it runs; removes them when it stops."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def register(self, alloc: Allocation, job: models.Job, node: Node, env: dict[str, str]) -> list[str]:
        group = next(g for g in job.TaskGroups or [] if g.Name == alloc.task_group)
        owned: list[tuple[str, models.Service, str]] = [(f"group-{group.Name}", s, "") for s in group.Services or []]
        for task in group.Tasks or []:
            owned += [(task.Name or "", s, task.Name or "") for s in task.Services or []]
        ids = []
        for owner, spec, task_name in owned:
            if (spec.Provider or "consul") != "consul":
                continue  # Nomad's own service registry is not served (docs/devcluster.md)
            extra = {"JOB": job.ID or "", "TASKGROUP": group.Name or "", "TASK": task_name}
            extra["BASE"] = f"{extra['JOB']}-{extra['TASKGROUP']}-{task_name}" if task_name else ""
            default_name = extra["BASE"] or f"{job.ID}-{group.Name}"
            name = interpolate(spec.Name or default_name, env, node, extra)
            label = spec.PortLabel or ""
            sid = service_id(alloc.id, owner, name, label)
            port = _port(alloc, label) if label else 0
            service = Service(
                id=sid,
                name=name,
                node=node.name,
                tags=[interpolate(t, env, node, extra) for t in spec.Tags or []],
                address="127.0.0.1",
                port=port,
                meta={**{k: interpolate(v, env, node, extra) for k, v in (spec.Meta or {}).items()},
                      "external-source": "nomad"},
                enable_tag_override=bool(spec.EnableTagOverride),
                source="nomad",
            )  # fmt: skip
            checks = [
                self._check(sid, name, c, n, alloc, port, node.name) for n, c in enumerate(spec.Checks or [], start=1)
            ]
            self.catalog.register_service(service, checks)
            ids.append(sid)
        return ids

    def _check(
        self, sid: str, service: str, spec: models.ServiceCheck, n: int, alloc: Allocation, port: int, node: str
    ) -> Check:
        if spec.PortLabel:
            port = _port(alloc, spec.PortLabel)
        kind = (spec.Type or "").lower()
        definition = CheckDefinition(
            interval_s=ns_to_s(spec.Interval, 10.0),
            timeout_s=ns_to_s(spec.Timeout, 2.0),
            method=spec.Method or "GET",
            header=dict(spec.Header or {}),
            body=spec.Body,
            tls_skip_verify=bool(spec.TLSSkipVerify),
            success_before_passing=spec.SuccessBeforePassing or 0,
            failures_before_critical=spec.FailuresBeforeCritical or 0,
        )
        if kind == "http":
            path = spec.Path or "/"
            scheme = spec.Protocol or "http"
            definition.http = f"{scheme}://127.0.0.1:{port}{path if path.startswith('/') else '/' + path}"
        else:
            definition.tcp = f"127.0.0.1:{port}"
        status = spec.InitialStatus if spec.InitialStatus in STATUSES else CRITICAL
        return Check(
            check_id=check_id(sid, spec, n),
            name=spec.Name or f'service: "{service}" check',
            node=node,
            status=status,
            definition=definition,
        )

    def deregister(self, alloc_id: str) -> None:
        prefix = f"_nomad-task-{alloc_id}-"
        for sid in [s for s in self.catalog.services if s.startswith(prefix)]:
            self.catalog.deregister_service(sid)
