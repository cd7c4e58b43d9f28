"""The concurrency limit of one instance: at most ``chute.concurrency`` cord calls in flight.

Used only from the event loop thread (a sync cord's thread releases its slot through the loop), so a plain
counter is enough and ``try_acquire`` never waits: a full instance answers 429 at once and the gateway picks
another instance.
"""

from __future__ import annotations

import asyncio


class ConcurrencyLimiter:
    """A non-blocking counting limit with a way to wait until nothing is in flight (for draining)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"concurrency must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self._idle: asyncio.Event | None = None

    @property
    def available(self) -> int:
        return max(self.limit - self.in_flight, 0)

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        if self.in_flight <= 0:
            raise RuntimeError("ConcurrencyLimiter.release() without a matching acquire")
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, seconds: float | None) -> bool:
        """Wait until nothing is in flight; False when ``seconds`` passed first (None: no limit)."""
        deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
        while self.in_flight:
            self._idle = asyncio.Event()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._idle.wait()
            except TimeoutError:
                return False
            finally:
                self._idle = None
        return True
