"""Distinct signature timestamps for identical calls to one instance (pure).

The signature (DESIGN.md, "Gateway → instance signature") covers ``t``, the method, the target and the
body, and the runtime refuses a signature it has already admitted within its 60 s window (replay
protection). So two identical calls signed in the same second would sign identically and the second would
be refused as a replay. The contract has no nonce, but ``t`` may be up to 60 s ahead of the instance's
clock: the first call of a second is stamped with that second; a repeat of it in the same second is
stamped with the next second not yet used for that (instance, call), looking at most ``AHEAD`` seconds
ahead. Stamps only ever move forward, so they never meet a second used earlier without being recorded.
That allows a burst of about 50 identical calls per instance, then about one per second; past that,
``stamp`` gives None and the call tries another instance. (A nonce in the signature would lift the limit.)

Memory: the calls of the current second (to spot a repeat), plus the stamps of calls that were repeated.
"""

from __future__ import annotations

from collections.abc import Hashable

AHEAD = 50  # seconds: inside the runtime's 60 s tolerance, with room for clock skew between hosts


class SignatureStamps:
    """Hands out signature timestamps so that no two identical calls to one instance sign alike."""

    def __init__(self) -> None:
        self._second = -1
        self._seen: set[Hashable] = set()  # calls stamped with the current second
        self._ahead: dict[Hashable, set[int]] = {}  # repeated calls: every second used for them

    def __len__(self) -> int:
        return len(self._ahead)

    def stamp(self, key: Hashable, now: int) -> int | None:
        """The timestamp for one call (``key`` names instance, method, target and body), or None if none is left."""
        if now != self._second:
            self._second = now
            self._seen = set()
            if self._ahead:  # repeated calls whose stamps are all in the past start afresh
                self._ahead = {k: used for k, used in self._ahead.items() if max(used) >= now}
        used = self._ahead.get(key)
        if used is None:
            if key not in self._seen:
                self._seen.add(key)
                return now
            used = self._ahead[key] = {now}  # a repeat within the second: stamp it ahead
        for t in range(now, now + AHEAD + 1):
            if t not in used:
                used.add(t)
                return t
        return None
