"""Which Consul registrations of a chute are instances Nomad runs (pure; the gateway and the autoscaler use it).

Nomad registers an allocation's service in Consul with the ID ``_nomad-task-<alloc id>-<task>-<service>-<port
label>``. Anyone who may write to Consul's catalog can register a service under any name; only a registration
whose allocation exists, belongs to the chute's job (``chute-<id>``, the service's own name), is running and
holds that address and port is one of the chute's instances.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NOMAD_SERVICE_ID = re.compile(r"^_nomad-task-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-")
Instance = tuple[str, str, int]  # (Consul service id, address, port)


def alloc_id_of(service_id: str) -> str | None:
    """The allocation id in a Nomad-made Consul service id, or None when the id is not Nomad's."""
    m = _NOMAD_SERVICE_ID.match(service_id)
    return m.group(1) if m else None


@dataclass(frozen=True, slots=True)
class AllocView:
    """What the check needs to know about one allocation."""

    job_id: str
    desired: str
    client: str
    addresses: frozenset[tuple[str, int]]  # (host IP, port) of every port it was given

    @property
    def running(self) -> bool:
        return self.desired == "run" and self.client == "running"

    @property
    def starting(self) -> bool:
        return self.desired == "run" and self.client == "pending"

    @classmethod
    def of(cls, alloc: dict[str, Any]) -> AllocView:
        shared = (alloc.get("AllocatedResources") or {}).get("Shared") or {}
        addresses = {(str(p.get("HostIP") or ""), int(p.get("Value") or 0)) for p in shared.get("Ports") or []}
        for network in shared.get("Networks") or []:
            ip = str(network.get("IP") or "")
            for key in ("DynamicPorts", "ReservedPorts"):
                addresses |= {(ip, int(p.get("Value") or 0)) for p in network.get(key) or []}
        return cls(
            str(alloc.get("JobID") or ""),
            str(alloc.get("DesiredStatus") or ""),
            str(alloc.get("ClientStatus") or ""),
            frozenset(addresses),
        )

    def serves(self, job_id: str, address: str, port: int) -> bool:
        if not self.running or self.job_id != job_id:
            return False
        return any(p == port and (ip in ("", address)) for ip, p in self.addresses)


def verify(job_id: str, found: list[Instance], allocs: dict[str, AllocView]) -> tuple[list[Instance], list[Instance]]:
    """(kept, unknown): instances backed by a running allocation of ``job_id``, and those naming an allocation
    ``allocs`` does not know yet or that is still starting (Consul may see it pass before Nomad reports it
    running). Everything else (not Nomad's, another job's, a port it was not given, stopped) is dropped."""
    kept: list[Instance] = []
    unknown: list[Instance] = []
    for instance in found:
        service_id, address, port = instance
        alloc_id = alloc_id_of(service_id)
        if alloc_id is None:
            continue
        view = allocs.get(alloc_id)
        if view is None or (view.starting and view.job_id == job_id):
            unknown.append(instance)
        elif view.serves(job_id, address, port):
            kept.append(instance)
    return kept, unknown
