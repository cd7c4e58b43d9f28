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

    def snapshot(self) -> dict[str, Any]:
        """What a Consul agent and server keep across a restart: KV, sessions and API-registered services."""
        agent_services = [s for s in self.catalog.services.values() if s.source == "agent"]
        ids = {s.id for s in agent_services}
        return {
            "kv": self.kv.to_json(),
            "sessions": [s.to_dict() for s in self.sessions.sessions.values()],
            "services": [s.to_dict() for s in agent_services],
            "checks": [
                c.to_dict()
                for c in self.catalog.checks.values()
                if c.service_id in ids or (not c.service_id and not c.check_id.startswith("_nomad"))
            ],
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.kv.restore(data.get("kv", []))
        for item in data.get("sessions", []):
            session = Session.from_dict(item)
            self.sessions.sessions[session.id] = session
        for item in data.get("services", []):
            service = Service.from_dict(item)
            self.catalog.ensure_node(service.node)
            self.catalog.services[service.id] = service
        for item in data.get("checks", []):
            check = Check.from_dict(item)
            # Timers are monotonic and do not survive a restart: TTLs and critical periods restart from now.
            now = time.monotonic()
            check.critical_since = now if check.status == CRITICAL else None
            check.ttl_deadline = now + check.definition.ttl_s if check.definition.ttl_s is not None else None
            self.catalog.checks[check.check_id] = check
