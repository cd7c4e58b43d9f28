"""A small async TTL cache with negative entries, single-flight loads and stale-if-error.

Keeps the scheduler off the hot path: API keys and routes are looked up once per TTL, not once per call.
Concurrent misses for one key share one load. When a refresh fails (the scheduler is down), the last good
value is served for up to ``stale_for`` seconds instead of failing every call.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V | None
    expires_at: float
    stale_until: float


class TTLCache(Generic[K, V]):
    """Caches ``loader(key)``: a value for ``ttl`` seconds, a None ("does not exist") for ``negative_ttl``."""

    def __init__(
        self,
        loader: Callable[[K], Awaitable[V | None]],
        ttl: float,
        negative_ttl: float,
        stale_for: float = 300.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._stale_for = stale_for
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[K, _Entry[V]] = {}
        self._loading: dict[K, asyncio.Task[V | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: K) -> V | None:
        """The cached value, loading it when missing or expired; loader errors propagate unless a stale value exists."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at > self._clock():
            return entry.value
        task = self._loading.get(key)
        if task is None:
            # The load runs as its own task, so a caller that goes away (client disconnect) does not cancel it
            # for the other callers waiting on the same key.
            task = asyncio.ensure_future(self._load(key, entry))
            self._loading[key] = task
            task.add_done_callback(functools.partial(self._loaded, key))
        return await asyncio.shield(task)

    def _loaded(self, key: K, task: asyncio.Task[V | None]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a load nobody waits for any more does not log a warning

    def invalidate(self, key: K) -> None:
        self._entries.pop(key, None)

    async def _load(self, key: K, previous: _Entry[V] | None) -> V | None:
        try:
            value = await self._loader(key)
        except Exception:
            if previous is not None and previous.value is not None and previous.stale_until > self._clock():
                return previous.value
            raise
        self._store(key, value)
        return value

    def _store(self, key: K, value: V | None) -> None:
        now = self._clock()
        if len(self._entries) >= self._max_entries and key not in self._entries:
            self._evict(now)
        ttl = self._ttl if value is not None else self._negative_ttl
        self._entries[key] = _Entry(value, now + ttl, now + ttl + self._stale_for)

    def _evict(self, now: float) -> None:
        expired = [k for k, e in self._entries.items() if e.stale_until <= now]
        for k in expired:
            del self._entries[k]
        if len(self._entries) >= self._max_entries:  # still full: drop the oldest half (dicts keep insertion order)
            for k in list(self._entries)[: len(self._entries) // 2]:
                del self._entries[k]
