"""A small async TTL cache with negative entries, single-flight loads, stale-if-error and push invalidation.

Keeps the scheduler off the hot path: API keys and routes are looked up once per TTL, not once per call.
Concurrent misses for one key share one load. When a refresh fails (the scheduler is down), the last good
value is served for up to ``stale_for`` seconds instead of failing every call.

The scheduler announces access changes (``chutes.gateway.invalidation``); ``invalidate`` drops an entry at
once, so neither the TTL nor stale-if-error can serve it again. ``revoke`` leaves a tombstone instead, for
what can never come back (a revoked API key): it answers "does not exist" without asking the scheduler,
for ``stale_for`` seconds, so a deleted key stays refused even while the scheduler is unreachable. A load
that was running when its key was invalidated may carry the old answer, so it is repeated, not stored.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# How many times a load is repeated when its key keeps being invalidated while it runs.
_RELOADS = 3


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V | None
    expires_at: float
    stale_until: float
    tombstone: bool = False  # revoked: "does not exist", even while the loader fails


class TTLCache(Generic[K, V]):
    """Caches ``loader(key)``: a value for ``ttl`` seconds, a None ("does not exist") for ``negative_ttl``.

    ``alias`` maps a key to a second name that invalidations use (the gateway caches API keys by their
    plaintext, the scheduler names them by their sha256).
    """

    def __init__(
        self,
        loader: Callable[[K], Awaitable[V | None]],
        ttl: float,
        negative_ttl: float,
        stale_for: float = 300.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        alias: Callable[[K], Hashable] | None = None,
    ) -> None:
        self._loader = loader
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._stale_for = stale_for
        self._max_entries = max_entries
        self._clock = clock
        self._alias = alias
        self._entries: dict[K, _Entry[V]] = {}
        self._aliases: dict[Hashable, K] = {}
        self._loading: dict[K, asyncio.Task[V | None]] = {}
        # Bumped by every invalidation of a key: a load that sees it change while running must not store.
        self._epochs: dict[K, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def peek(self, key: K) -> _Entry[V] | None:
        """The entry for ``key`` if it is fresh (its ``value`` None: "does not exist"), else None; never loads."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at > self._clock():
            return entry
        return None

    async def get(self, key: K) -> V | None:
        """The cached value, loading it when missing or expired; loader errors propagate unless a stale value exists."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at > self._clock():
            return entry.value
        task = self._loading.get(key)
        if task is None:
            # The load runs as its own task, so a caller that goes away (client disconnect) does not cancel it
            # for the other callers waiting on the same key.
            task = asyncio.ensure_future(self._load(key))
            self._loading[key] = task
            task.add_done_callback(functools.partial(self._loaded, key))
        return await asyncio.shield(task)

    def _loaded(self, key: K, task: asyncio.Task[V | None]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
            self._epochs.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a load nobody waits for any more does not log a warning

    # -- invalidation

    def invalidate(self, key: K) -> bool:
        """Forget ``key`` (its next call loads it again); True if an entry was dropped."""
        if key in self._loading or key in self._entries:
            self._bump(key)
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._drop_alias(key)
        return entry is not None

    def revoke(self, key: K) -> None:
        """Remember that ``key`` is gone for good (see the module docstring)."""
        self._bump(key)
        until = self._clock() + self._stale_for
        self._entries[key] = _Entry(None, until, until, tombstone=True)

    def invalidate_alias(self, alias: Hashable, *, gone: bool = False) -> bool:
        """``invalidate`` (or with ``gone``, ``revoke``) the key known by ``alias``; False if none is cached."""
        key = self._aliases.get(alias)
        if key is None:
            return False
        if gone:
            self.revoke(key)
        else:
            self.invalidate(key)
        return True

    def invalidate_where(self, matches: Callable[[K, V], bool]) -> int:
        """Forget every cached value for which ``matches(key, value)``; returns how many went."""
        doomed = [k for k, e in self._entries.items() if e.value is not None and matches(k, e.value)]
        for key in doomed:
            self.invalidate(key)
        return len(doomed)

    def invalidate_keys(self, keys: Iterable[K]) -> int:
        return sum(self.invalidate(key) for key in keys)

    def clear(self) -> None:
        """Forget everything (the gateway missed invalidations: it cannot tell which entries are stale)."""
        for key in self._loading:
            self._bump(key)
        self._entries.clear()
        self._aliases.clear()

    def _bump(self, key: K) -> None:
        self._epochs[key] = self._epochs.get(key, 0) + 1

    def _drop_alias(self, key: K) -> None:
        if self._alias is not None:
            alias = self._alias(key)
            if self._aliases.get(alias) == key:
                del self._aliases[alias]

    # -- loading

    async def _load(self, key: K) -> V | None:
        for _ in range(_RELOADS):
            epoch = self._epochs.get(key, 0)
            previous = self._entries.get(key)
            try:
                value = await self._loader(key)
            except Exception:
                servable = previous is not None and (previous.tombstone or previous.value is not None)
                if previous is not None and servable and previous.stale_until > self._clock():
                    return previous.value
                raise
            if self._epochs.get(key, 0) == epoch:
                self._store(key, value)
                return value
            # Invalidated while loading: the answer may predate the change. Ask again.
        return value

    def _store(self, key: K, value: V | None) -> None:
        now = self._clock()
        if len(self._entries) >= self._max_entries and key not in self._entries:
            self._evict(now)
        ttl = self._ttl if value is not None else self._negative_ttl
        self._entries[key] = _Entry(value, now + ttl, now + ttl + self._stale_for)
        self._epochs.pop(key, None)  # nothing in flight depends on it any more
        if self._alias is not None:
            self._aliases[self._alias(key)] = key

    def _evict(self, now: float) -> None:
        expired = [k for k, e in self._entries.items() if e.stale_until <= now]
        for k in expired:
            del self._entries[k]
            self._drop_alias(k)
        if len(self._entries) >= self._max_entries:  # still full: drop the oldest half (dicts keep insertion order)
            for k in list(self._entries)[: len(self._entries) // 2]:
                del self._entries[k]
                self._drop_alias(k)
