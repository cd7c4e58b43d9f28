"""Exponential backoff with jitter, the one pacing every retry loop of the platform uses."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(base: float, attempt: int, cap: float, rng: Callable[[], float] = random.random) -> float:
    """The delay before retry number ``attempt`` (0 first): ``base`` doubled per attempt, at most ``cap``, drawn
    in [d/2, d].

    Half of the delay is fixed so that retries never collapse to zero; the other half spreads clients that lost
    the same server at the same moment.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), 32))
    return ceiling / 2 + rng() * ceiling / 2


class Backoff:
    """Successive delays of :func:`backoff_delay`: base, 2×base, 4×base... up to ``cap``; :meth:`reset` after a
    success."""

    def __init__(self, base: float = 1.0, cap: float = 30.0, rng: Callable[[], float] = random.random) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng
        self.attempt = 0

    @classmethod
    def after_first_failure(cls, unit: float, cap: float, rng: Callable[[], float] = random.random) -> Backoff:
        """The pacing of loops whose first retry waits two ``unit``\\ s (``min(cap, unit × 2**failures)``)."""
        return cls(min(2 * unit, cap), cap, rng)

    def next_delay(self) -> float:
        delay = backoff_delay(self.base, self.attempt, self.cap, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
