"""Retry pacing and "one log line per state change" for the agent's links to Consul and Nomad."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import aiohttp

# Failures that mean "nobody answered", as opposed to an answer that was an error.
_UNREACHABLE = (OSError, TimeoutError, aiohttp.ClientConnectionError, str)


class Backoff:
    """Exponential backoff with jitter: base, 2×base, 4×base... up to ``cap``, each drawn in [d/2, d].

    Half of the delay is fixed so that retries never collapse to zero; the other half spreads agents that lost
    the same server at the same moment.
    """

    def __init__(self, base: float = 1.0, cap: float = 30.0, rng: Callable[[], float] = random.random) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self.attempt = 0


class LinkState:
    """Whether a remote service answers, logged once per change of state rather than once per failure."""

    def __init__(self, name: str, address: str, log: logging.Logger) -> None:
        self.name = name
        self.address = address
        self.up: bool | None = None  # None: not tried yet
        self.failures = 0
        self._log = log

    def ok(self) -> None:
        if self.up is not True:
            if self.up is None:
                self._log.info("%s reachable at %s", self.name, self.address)
            else:
                self._log.info(
                    "%s reachable again at %s after %d failed attempt(s)", self.name, self.address, self.failures
                )
        self.up = True
        self.failures = 0

    def failed(self, error: BaseException | str) -> None:
        self.failures += 1
        if self.up is not False:
            detail = error if isinstance(error, str) else (f"{type(error).__name__}: {error}".rstrip(": "))
            # A refused connection or a timeout is "unreachable"; an HTTP error (ACL, bad request) is not, and
            # the operator fixes it differently.
            state = "unreachable" if isinstance(error, _UNREACHABLE) else "answers with errors"
            self._log.warning(
                "%s %s at %s (%s); retrying with backoff, still probing GPUs", self.name, state, self.address, detail
            )
        self.up = False
