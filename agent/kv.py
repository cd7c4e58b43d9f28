"""Publishing the inventory to Consul KV with check-and-set, which also detects two agents sharing a node id.

Every write carries ``cas=<ModifyIndex of our last write>``. Consul refuses it when anybody else wrote the key
in between, and then the value in the key tells who: our own bytes (a lost reply, a Consul that restarted and
renumbered) are adopted silently; another agent's bytes mean two agents publish the same node id. Both agents
must hear about that, so the one that notices first writes once more over the other (which then notices in
turn), logs it, counts it, and steps back: it stops writing and only watches the key with a growing backoff.
The first agent that finds the key untouched since its last look takes over again. Nobody fights forever.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .backoff import Backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KVEntry:
    modify_index: int
    value: bytes


class KVStore(Protocol):
    """The two KV calls the publisher needs (Consul: ``GET /v1/kv/<key>``, ``PUT /v1/kv/<key>?cas=``)."""

    async def get(self, key: str) -> KVEntry | None: ...

    async def put(self, key: str, value: bytes, cas: int) -> bool: ...


class Outcome(enum.Enum):
    WRITTEN = "written"
    SKIPPED = "skipped"  # nothing changed and the refresh is not due
    CONFLICT = "conflict"  # another writer was detected just now
    PAUSED = "paused"  # stepped back after a conflict; the other writer is still active


class KVPublisher:
    """Writes one key on change (a new fingerprint) and at least every ``refresh_s`` seconds."""

    def __init__(
        self,
        store: KVStore,
        key: str,
        refresh_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        on_conflict: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.refresh_s = refresh_s
        self._clock = clock
        # Long enough that an active writer (refreshing every refresh_s) shows up between two looks.
        self._backoff = backoff or Backoff(base=2 * refresh_s, cap=max(10 * refresh_s, 600.0))
        self._on_conflict = on_conflict
        self._index: int | None = None  # ModifyIndex of our last write; None: not known yet
        self._body: bytes | None = None
        self._fingerprint: str | None = None
        self._written_at: float | None = None
        self._clean_since: float | None = None
        self._observed = 0
        self._retry_at = 0.0
        self.conflict = False
        self.conflicts = 0
        self.writes = 0

    async def publish(self, body: bytes, fingerprint: str, force: bool = False) -> Outcome:
        """Write ``body`` if it changed, the refresh is due or ``force``; network errors propagate."""
        now = self._clock()
        if self.conflict:
            if now < self._retry_at:
                return Outcome.PAUSED
            current = await self.store.get(self.key)
            index = current.modify_index if current else 0
            if current is not None and index != self._observed:
                self._observed = index
                self._retry_at = now + self._backoff.next_delay()
                return Outcome.PAUSED
            log.warning("%s: no other writer seen since the last look; this agent publishes it again", self.key)
            self.conflict = False
            self._index = index
            self._clean_since = now
            force = True
        due = force or fingerprint != self._fingerprint or self._written_at is None
        if not due and self._written_at is not None and now - self._written_at < self.refresh_s:
            return Outcome.SKIPPED
        if self._index is None:
            current = await self.store.get(self.key)
            self._index = current.modify_index if current else 0
        if await self.store.put(self.key, body, cas=self._index):
            return await self._written(body, fingerprint, now)
        current = await self.store.get(self.key)
        if current is None:  # the key is gone (Consul lost its state): create it anew
            if await self.store.put(self.key, body, cas=0):
                return await self._written(body, fingerprint, now)
            current = await self.store.get(self.key)
            if current is None:
                self._index = None
                return Outcome.SKIPPED
        if self._body is not None and current.value == self._body:
            # Our own last write under a new index (a lost reply, a restarted Consul): adopt it and go on.
            if await self.store.put(self.key, body, cas=current.modify_index):
                return await self._written(body, fingerprint, now)
            current = await self.store.get(self.key)
            if current is None:
                self._index = None
                return Outcome.SKIPPED
        return await self._conflicted(current, body, fingerprint, now)

    async def _written(self, body: bytes, fingerprint: str, now: float) -> Outcome:
        self.writes += 1
        current = await self.store.get(self.key)  # a KV PUT answers true/false only: read the new index back
        if current is None or current.value != body:
            # Somebody wrote between our PUT and this GET: that is another writer as well.
            if current is None:
                self._index = None
                return Outcome.WRITTEN
            return await self._conflicted(current, body, fingerprint, now, rewrite=False)
        self._index = current.modify_index
        self._body = body
        self._fingerprint = fingerprint
        self._written_at = now
        if self._clean_since is not None and now - self._clean_since >= 10 * self.refresh_s:
            self._backoff.reset()
            self._clean_since = None
        return Outcome.WRITTEN

    async def _conflicted(
        self, current: KVEntry, body: bytes, fingerprint: str, now: float, rewrite: bool = True
    ) -> Outcome:
        self.conflicts += 1
        if self._on_conflict is not None:
            self._on_conflict()
        log.error(
            "another agent publishes the same node: %s was changed by a writer other than this agent "
            "(ModifyIndex %d). Two agents share this node id; give each host its own CHUTES_NODE_ID. "
            "This agent writes once more so that the other one notices, then steps back.",
            self.key,
            current.modify_index,
        )
        self._observed = current.modify_index
        if rewrite and await self.store.put(self.key, body, cas=current.modify_index):
            self.writes += 1
            mine = await self.store.get(self.key)
            if mine is not None:
                self._observed = mine.modify_index
                if mine.value == body:
                    self._body, self._fingerprint, self._written_at = body, fingerprint, now
        self.conflict = True
        self._index = None
        self._retry_at = now + self._backoff.next_delay()
        return Outcome.CONFLICT
