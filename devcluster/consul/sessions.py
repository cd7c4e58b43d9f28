"""Consul sessions: TTL expiry, health-check binding, and invalidation that releases (or deletes) their locks."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from chutes.devcluster.consul.catalog import SERF_CHECK, Catalog
from chutes.devcluster.consul.kv import KVStore
from chutes.devcluster.consul.reaping import reap_every
from chutes.devcluster.consul.records import Check, Session
from chutes.devcluster.durations import NS_PER_S, format_duration
from chutes.devcluster.state.index import IndexStore

log = logging.getLogger(__name__)


class SessionError(ValueError):
    """A session request Consul would refuse."""


class Sessions:
    def __init__(
        self,
        index: IndexStore,
        catalog: Catalog,
        kv: KVStore,
        min_ttl_s: float = 10.0,
        reap_interval_s: float = 0.25,
    ) -> None:
        self.index = index
        self.catalog = catalog
        self.kv = kv
        self.min_ttl_s = min_ttl_s
        self.reap_interval_s = reap_interval_s
        self.sessions: dict[str, Session] = {}
        self.on_change: list[Callable[[], None]] = []
        self._reaper: asyncio.Task[None] | None = None
        catalog.on_critical.append(self._check_went_critical)

    def exists(self, session_id: str) -> bool:
        return session_id in self.sessions

    def create(
        self,
        name: str,
        node: str,
        behavior: str,
        ttl_s: float | None,
        lock_delay_s: float,
        node_checks: list[str] | None,
        service_checks: list[dict[str, str]],
    ) -> Session:
        if behavior not in ("release", "delete"):
            raise SessionError(f"Invalid Behavior setting '{behavior}' (use release or delete)")
        if ttl_s is not None and ttl_s != 0 and not (self.min_ttl_s <= ttl_s <= 86400):
            raise SessionError(
                f"Invalid Session TTL '{format_duration(ttl_s)}', must be between "
                f"[{format_duration(self.min_ttl_s)}=24h0m0s]"
            )
        if node not in self.catalog.nodes:
            raise SessionError(f"Missing node registration for '{node}'")
        checks = [SERF_CHECK] if node_checks is None else list(node_checks)
        for check_id in checks:
            if check_id != SERF_CHECK and check_id not in self.catalog.checks:
                raise SessionError(f'Missing check "{check_id}" registration')
        for ref in service_checks:
            if ref.get("ID", "") not in self.catalog.checks:
                raise SessionError(f'Missing check "{ref.get("ID", "")}" registration')
        idx = self.index.bump("sessions")
        session = Session(
            id=str(uuid.uuid4()),
            name=name,
            node=node,
            behavior=behavior,
            ttl_s=ttl_s or None,
            lock_delay_s=lock_delay_s,
            node_checks=checks,
            service_checks=list(service_checks),
            create_index=idx,
            modify_index=idx,
        )
        self._arm(session)
        self.sessions[session.id] = session
        self._changed()
        return session

    def renew(self, session_id: str) -> Session | None:
        session = self.sessions.get(session_id)
        if session is not None:
            self._arm(session)
        return session

    def destroy(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return True
        self.kv.release_session(session.id, session.behavior, session.lock_delay_s)
        self.index.bump("sessions")
        self._changed()
        return True

    def _arm(self, session: Session) -> None:
        session.expires_at = time.monotonic() + session.ttl_s if session.ttl_s else None

    def _check_went_critical(self, check: Check) -> None:
        for session in list(self.sessions.values()):
            bound = set(session.node_checks) | {ref.get("ID", "") for ref in session.service_checks}
            if check.check_id in bound:
                log.info("invalidating session %s: check %s is critical", session.id, check.check_id)
                self.destroy(session.id)

    def reap(self, now: float) -> None:
        for session in list(self.sessions.values()):
            if session.expires_at is not None and now > session.expires_at:
                log.info("invalidating session %s (%s): TTL expired", session.id, session.name)
                self.destroy(session.id)

    async def open(self) -> None:
        for session in self.sessions.values():
            self._arm(session)
        self._reaper = asyncio.create_task(
            reap_every(self.reap_interval_s, self.reap, log, "session reaper"), name="session-reaper"
        )

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    def to_json(self, session: Session) -> dict[str, Any]:
        return {
            "ID": session.id,
            "Name": session.name,
            "Node": session.node,
            "LockDelay": int(session.lock_delay_s * NS_PER_S),
            "Behavior": session.behavior,
            "TTL": format_duration(session.ttl_s) if session.ttl_s else "",
            "NodeChecks": list(session.node_checks),
            "ServiceChecks": [dict(c) for c in session.service_checks] or None,
            "Checks": list(session.node_checks),
            "CreateIndex": session.create_index,
            "ModifyIndex": session.modify_index,
        }
