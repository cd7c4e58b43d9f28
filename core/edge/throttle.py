"""Failed authentications throttled per client address, without slowing anyone else.

A token bucket per address that has failed: each failure takes a token; ``burst`` tokens, refilled at
``per_second``. An address with an empty bucket gets 429 with ``Retry-After`` for the calls that would need a
key lookup, before any lookup is made, so a flood of wrong keys costs the platform a dictionary lookup per
call instead of a database query. Addresses that never failed are never looked at beyond one check of an
empty dictionary; an address's bucket is dropped once it has refilled.

Keys that authenticated lately (``accepted``) pass the gate even from a throttled address: a valid caller
behind the same address as an attacker (a NAT, a shared gateway host) keeps working, while every unknown
key from that address waits. What a remembered key may do is still decided by the normal lookup.

An address that has failed before pays its token when it passes the gate, before the lookup (and gets it
back when the key turns out valid): otherwise many concurrent calls could all pass on the last token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class FailureThrottle:
    """Per-client failure budget (see the module docstring)."""

    def __init__(
        self,
        burst: int = 20,
        per_second: float = 1.0,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or not per_second > 0:
            raise ValueError("a failure throttle needs burst >= 1 and per_second > 0")
        self.burst = float(burst)
        self.per_second = per_second
        self.max_clients = max_clients
        self._clock = clock
        #: client -> (tokens left, when counted); insertion order = oldest first, for eviction
        self._buckets: dict[str, tuple[float, float]] = {}
        #: credentials that authenticated lately (bounded; cleared when full)
        self._known: dict[str, None] = {}
        #: tokens taken at the gate from an address whose lookup has not settled yet
        self._charged: dict[str, int] = {}
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, client: str, now: float) -> float | None:
        entry = self._buckets.get(client)
        if entry is None:
            return None
        tokens = min(self.burst, entry[0] + (now - entry[1]) * self.per_second)
        if tokens >= self.burst:
            del self._buckets[client]  # refilled: forget the address
            self._charged.pop(client, None)
            return None
        return tokens

    def retry_after(self, client: str | None) -> int | None:
        """Seconds the client must wait before its next attempt, or None when it may try now."""
        if not self._buckets or client is None:
            return None
        tokens = self._tokens(client, self._clock())
        if tokens is None or tokens >= 1.0:
            return None
        self.refused += 1
        return max(1, math.ceil((1.0 - tokens) / self.per_second))

    def gate(self, client: str | None, credential: str | None) -> int | None:
        """Seconds to wait when ``client`` is throttled and ``credential`` is not one known to be valid.

        When the address has failed before and may try, its token is taken now; ``accepted`` gives it back.
        """
        if not self._buckets or client is None:
            return None
        if credential is not None and credential in self._known:
            return None
        now = self._clock()
        tokens = self._tokens(client, now)
        if tokens is None:
            return None
        if tokens < 1.0:
            self.refused += 1
            return max(1, math.ceil((1.0 - tokens) / self.per_second))
        self._buckets[client] = (tokens - 1.0, now)
        self._charged[client] = min(int(self.burst), self._charged.get(client, 0) + 1)
        return None

    def accepted(self, credential: str, client: str | None = None) -> None:
        """``credential`` authenticated (from ``client``): it passes throttled addresses; a token taken at the
        gate is given back."""
        if len(self._known) >= self.max_clients:
            self._known.clear()
        self._known[credential] = None
        if client is not None and self._uncharge(client):
            now = self._clock()
            tokens = self._tokens(client, now)
            if tokens is not None:
                self._buckets[client] = (min(self.burst, tokens + 1.0), now)

    def rejected(self, credential: str) -> None:
        """``credential`` failed (revoked): it no longer passes throttled addresses."""
        self._known.pop(credential, None)

    def _uncharge(self, client: str) -> bool:
        charged = self._charged.get(client, 0)
        if not charged:
            return False
        if charged == 1:
            del self._charged[client]
        else:
            self._charged[client] = charged - 1
        return True

    def failed(self, client: str | None) -> None:
        """Record one failed authentication of ``client`` (its token was taken at the gate, or is taken now)."""
        if client is None or self._uncharge(client):
            return
        now = self._clock()
        tokens = self._tokens(client, now)
        if tokens is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_clients:
                self._evict(now)
        self._buckets.pop(client, None)
        self._buckets[client] = (max(0.0, tokens - 1.0), now)

    def _evict(self, now: float) -> None:
        for client in list(self._buckets):
            self._tokens(client, now)  # drops the refilled ones
        if len(self._buckets) >= self.max_clients:  # still full: forget the oldest half
            for client in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[client]
