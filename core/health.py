"""Consul health entries (``GET /v1/health/service/<name>``) read the one way every process needs (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chutes.core.registrations import alloc_id_of

Instance = tuple[str, str, int]  # (Consul service id, address, port)


@dataclass(frozen=True, slots=True)
class HealthEntry:
    """One service instance as Consul's health endpoint lists it."""

    service_id: str
    address: str  # the service's address, else its node's (as Consul documents); "" when neither is set
    port: int  # 0 when the registration has none
    passing: bool  # every check of the entry (the service's and the node's) passes

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> HealthEntry:
        service = entry.get("Service") or {}
        node = entry.get("Node") or {}
        return cls(
            service_id=str(service.get("ID") or ""),
            address=str(service.get("Address") or node.get("Address") or ""),
            port=int(service.get("Port") or 0),
            passing=all(c.get("Status") == "passing" for c in entry.get("Checks") or []),
        )

    @property
    def callable(self) -> bool:
        """It has an address and a port to send calls to."""
        return bool(self.address and self.port)


def health_entries(entries: Iterable[Mapping[str, Any]] | None) -> list[HealthEntry]:
    return [HealthEntry.of(e) for e in entries or []]


def instances(entries: Iterable[Mapping[str, Any]] | None) -> list[Instance]:
    """(service id, address, port) of each entry that can be called, sorted; a registration without an ID is
    keyed by its address."""
    found = [
        (h.service_id or f"{h.address}:{h.port}", h.address, h.port) for h in health_entries(entries) if h.callable
    ]
    found.sort()
    return found


def by_allocation(entries: Iterable[Mapping[str, Any]] | None) -> dict[str, HealthEntry]:
    """Nomad-registered entries by allocation id (from Nomad's ``_nomad-task-<alloc id>-...`` service IDs)."""
    out: dict[str, HealthEntry] = {}
    for h in health_entries(entries):
        alloc_id = alloc_id_of(h.service_id)
        if alloc_id is not None:
            out[alloc_id] = h
    return out
