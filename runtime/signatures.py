"""Request signatures with replay protection, on top of ``chutes.core.signing``.

``chutes.core.signing.verify`` checks the HMAC (constant-time) and the clock skew. A signature that passed once
could be replayed within its 60 s window, so the runtime remembers every signature it admitted until that
window has closed and refuses a second use with 403. The check and the record are split (``check`` then
``commit``) so that a request refused for a transient reason (429 full, 503 draining) does not burn its
signature: the gateway may retry the very same signed request on this instance.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chutes.core.signing import MAX_SKEW_SECONDS, ParsedSignature, SignatureError, verify


@dataclass
class ReplayCache:
    """Signatures seen recently, each kept until the moment it would be refused as stale anyway."""

    _expiry: dict[str, float] = field(default_factory=dict)
    _heap: list[tuple[float, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._expiry)

    def seen(self, key: str, now: float) -> bool:
        self._purge(now)
        return key in self._expiry

    def add(self, key: str, expires_at: float) -> None:
        self._expiry[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key))

    def _purge(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] < now:
            expires_at, key = heapq.heappop(heap)
            if self._expiry.get(key) == expires_at:
                del self._expiry[key]


@dataclass
class RequestVerifier:
    """Verifies ``X-Chutes-Signature`` headers: 401 missing, 403 malformed, wrong, stale or replayed."""

    secret: str
    max_skew: int = MAX_SKEW_SECONDS
    clock: Callable[[], float] = time.time
    replay: ReplayCache = field(default_factory=ReplayCache)

    def check(self, header: str | None, method: str, target: str, body: bytes) -> ParsedSignature:
        """Verify one request; raises ``SignatureError`` with the HTTP status to answer."""
        now = self.clock()
        parsed = verify(self.secret, header, method, target, body, now=now, max_skew=self.max_skew)
        if self.replay.seen(parsed.digest, now):
            raise SignatureError("replayed signature: this signed request was already served", 403)
        return parsed

    def commit(self, parsed: ParsedSignature) -> None:
        """Record an admitted signature so that a replay within its window is refused."""
        # One second of slack: the skew check compares floats against an integer timestamp.
        self.replay.add(parsed.digest, parsed.timestamp + self.max_skew + 1)
