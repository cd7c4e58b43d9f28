"""The Consul half's state as one object: catalog, check runner, KV and sessions, with their snapshot."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chutes.devcluster.consul.catalog import Catalog
from chutes.devcluster.consul.checks import CheckRunner
from chutes.devcluster.consul.kv import KVStore
from chutes.devcluster.consul.records import CRITICAL, Check, Service, Session
from chutes.devcluster.consul.sessions import Sessions
from chutes.devcluster.state.index import IndexStore


class ConsulState:
    def __init__(
        self,
        index: IndexStore,
        local_node: str,
        session_min_ttl_s: float = 10.0,
        reap_interval_s: float = 0.25,
    ) -> None:
        self.index = index
        self.catalog = Catalog(index, local_node)
        self.runner = CheckRunner(self.catalog, reap_interval_s)
        self.sessions: Sessions
        self.kv = KVStore(index, lambda sid: sid in self.sessions.sessions)
        self.sessions = Sessions(index, self.catalog, self.kv, session_min_ttl_s, reap_interval_s)
        self._sessions_unsaved = False
        self.sessions.on_change.append(self._sessions_touched)

    def _sessions_touched(self) -> None:
        self._sessions_unsaved = True

    def on_change(self, callback: Callable[[], None]) -> None:
        self.catalog.on_change.append(callback)
        self.kv.on_change.append(callback)
        self.sessions.on_change.append(callback)

    async def open(self) -> None:
        await self.runner.open()
        await self.sessions.open()

    async def close(self) -> None:
        await self.sessions.close()
        await self.runner.close()

    def _saved_service(self, service: Service | None) -> dict[str, Any] | None:
        return service.to_dict() if service is not None and service.source == "agent" else None

    def _saved_check(self, check: Check | None) -> dict[str, Any] | None:
        if check is None:
            return None
        if check.service_id:
            owner = self.catalog.services.get(check.service_id)
            keep = owner is not None and owner.source == "agent"
        else:
            keep = not check.check_id.startswith("_nomad")
        return check.to_dict() if keep else None

    def snapshot(self) -> dict[str, Any]:
        """What a Consul agent and server keep across a restart: KV, sessions and API-registered services.

        KV, services and checks are keyed by ID, so that a journal record (``delta``) can replace one of them.
        """
        self.catalog.unsaved_services.clear()
        self.catalog.unsaved_checks.clear()
        self._sessions_unsaved = False
        services = {sid: d for sid, s in self.catalog.services.items() if (d := self._saved_service(s)) is not None}
        checks = {cid: d for cid, c in self.catalog.checks.items() if (d := self._saved_check(c)) is not None}
        return {
            "kv": self.kv.to_json(),
            "sessions": [s.to_dict() for s in self.sessions.sessions.values()],
            "services": services,
            "checks": checks,
        }

    def delta(self) -> dict[str, Any]:
        """What changed since the last ``snapshot`` or ``delta``: records by ID, None for a removed one."""
        out: dict[str, Any] = {}
        if self.kv.unsaved:
            out["kv"] = self.kv.take_changed()
        if self.catalog.unsaved_services:
            services = self.catalog.services
            out["services"] = {i: self._saved_service(services.get(i)) for i in self.catalog.unsaved_services}
            self.catalog.unsaved_services.clear()
        if self.catalog.unsaved_checks:
            out["checks"] = {i: self._saved_check(self.catalog.checks.get(i)) for i in self.catalog.unsaved_checks}
            self.catalog.unsaved_checks.clear()
        if self._sessions_unsaved:
            self._sessions_unsaved = False
            out["sessions"] = [s.to_dict() for s in self.sessions.sessions.values()]
        return out

    @staticmethod
    def replay(saved: dict[str, Any], delta: dict[str, Any]) -> None:
        """Apply a ``delta`` to a saved ``snapshot`` in place."""
        for table in ("kv", "services", "checks"):
            if table not in delta:
                continue
            current = saved.get(table)
            if not isinstance(current, dict):  # a snapshot written before the journal keeps lists
                key = "Key" if table == "kv" else ("id" if table == "services" else "check_id")
                current = {item[key]: item for item in current or []}
                saved[table] = current
            for name, item in delta[table].items():
                if item is None:
                    current.pop(name, None)
                else:
                    current[name] = item
        if "sessions" in delta:
            saved["sessions"] = delta["sessions"]

    def restore(self, data: dict[str, Any]) -> None:
        self.kv.restore(data.get("kv", []))
        for item in data.get("sessions", []):
            session = Session.from_dict(item)
            self.sessions.sessions[session.id] = session
        services = data.get("services", [])
        for item in services.values() if isinstance(services, dict) else services:
            service = Service.from_dict(item)
            self.catalog.ensure_node(service.node)
            self.catalog.services[service.id] = service
        checks = data.get("checks", [])
        for item in checks.values() if isinstance(checks, dict) else checks:
            check = Check.from_dict(item)
            # Timers are monotonic and do not survive a restart: TTLs and critical periods restart from now.
            now = time.monotonic()
            check.critical_since = now if check.status == CRITICAL else None
            check.ttl_deadline = now + check.definition.ttl_s if check.definition.ttl_s is not None else None
            self.catalog.restore_check(check)
