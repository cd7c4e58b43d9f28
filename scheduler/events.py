"""Deployment events: recorded in the store, announced to local followers, streamed as Server-Sent Events.

A follower reads the store after the last event it sent, then waits for a local announcement or a short
poll interval, so it also sees events that another scheduler process recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from chutes.core.waiting import wait_event
from chutes.scheduler.store import Store
from chutes.scheduler.store import events as events_repo
from chutes.scheduler.store.models import Chute, Event

log = logging.getLogger(__name__)

# The lifecycle a deploy walks through; "unschedulable", "failed", "scaled", "deleted" and others may interleave.
KINDS = (
    "accepted", "registered", "waiting", "placed", "running", "ready", "unschedulable", "failed", "stopped",
    "scaled", "reconciled", "deleting", "deleted", "error",
)  # fmt: skip
FINAL_KINDS = frozenset({"deleted"})  # a follower's stream ends after one of these


def event_dict(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "chute_id": event.chute_id,
        "version": event.version,
        "type": event.kind,
        "message": event.message,
        "data": event.data or {},
        "created_at": event.created_at,
    }


def sse_frame(event: Event) -> str:
    """One event as an SSE frame: ``id``, ``event`` (the kind) and ``data`` (the JSON event)."""
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event_dict(event), separators=(',', ':'))}\n\n"


class EventHub:
    """Records events and wakes the followers in this process."""

    def __init__(self, store: Store, poll_interval: float = 1.0) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self._changed = asyncio.Event()

    def _announce(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def record(
        self,
        chute_id: str,
        kind: str,
        message: str,
        *,
        version: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        """Store one event in its own transaction and wake the followers."""
        async with self.store.session() as session:
            event = await events_repo.add_event(session, chute_id, kind, message, version=version, data=data)
        log.info("chute %s: %s: %s", chute_id, kind, message)
        self._announce()
        return event

    def announce(self) -> None:
        """Wake the followers after events were added in a caller's own transaction."""
        self._announce()

    async def _exists(self, chute_id: str) -> bool:
        async with self.store.session() as session:
            return await session.get(Chute, chute_id) is not None

    async def list(self, chute_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        async with self.store.session() as session:
            return await events_repo.list_events(session, chute_id, after=after, limit=limit)

    async def follow(
        self, chute_id: str, after: int = 0, *, for_seconds: float | None = None
    ) -> AsyncIterator[Event | None]:
        """Every event after ``after``, then new ones as they come; yields None as a keep-alive tick.

        Ends after a final event, when the chute no longer exists (it was deleted) or after ``for_seconds``.
        """
        deadline = None if for_seconds is None else time.monotonic() + for_seconds
        last_tick = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            changed = self._changed
            events = await self.list(chute_id, after)
            for event in events:
                after = event.id
                yield event
                if event.kind in FINAL_KINDS:
                    return
            if not events and not await self._exists(chute_id):
                return
            if time.monotonic() - last_tick >= 15:
                last_tick = time.monotonic()
                yield None
            wait = self.poll_interval
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            await wait_event(changed, wait)
