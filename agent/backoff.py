"""Retry pacing (the shared :class:`chutes.core.backoff.Backoff`) and "one log line per state change" for the
agent's links to Consul and Nomad."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp

from chutes.core.backoff import Backoff

__all__ = ["Backoff", "LinkState"]

# Failures that mean "nobody answered", as opposed to an answer that was an error.
_UNREACHABLE = (OSError, TimeoutError, aiohttp.ClientConnectionError, str)


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

    async def attempt(
        self, step: Callable[[], Awaitable[None]], errors: tuple[type[BaseException], ...], backoff: Backoff
    ) -> bool:
        """Run one tick's ``step`` against the service and say whether it succeeded (the link is up and
        ``backoff`` starts again). One of ``errors`` counts as a failure of the link; any other exception is a bug
        or an answer we did not expect, logged with its traceback: a loop never dies of it."""
        try:
            await step()
        except errors as exc:
            self.failed(exc)
            return False
        except Exception:
            self._log.exception("unexpected error talking to %s at %s", self.name, self.address)
            return False
        self.ok()
        backoff.reset()
        return True
