"""Invocation records: collected per call, sent to the scheduler in batches by a background flusher.

``record`` only appends to a bounded queue, so metering never slows or fails a call. The flusher sends a
batch every ``interval`` seconds (or as soon as ``batch_size`` records wait); a failed send keeps the batch
and retries with backoff. When the queue is full (scheduler down for long), the oldest records are dropped
and counted in ``chutes_gateway_invocations_dropped_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

log = logging.getLogger(__name__)

Sink = Callable[[list[dict[str, Any]]], Awaitable[None]]


class InvocationRecorder:
    """Buffers invocation records and ships them to ``sink`` in the background."""

    def __init__(
        self,
        sink: Sink,
        interval: float = 1.0,
        batch_size: int = 500,
        max_pending: int = 100_000,
        dropped: Counter | None = None,
        sent: Counter | None = None,
    ) -> None:
        self._sink = sink
        self._interval = interval
        self._batch_size = batch_size
        self._pending: deque[dict[str, Any]] = deque()
        self._max_pending = max_pending
        self._dropped = dropped
        self._sent = sent
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, rec: dict[str, Any]) -> None:
        """Queue one record (never blocks, never raises)."""
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            if self._dropped is not None:
                self._dropped.inc()
        self._pending.append(rec)
        if len(self._pending) >= self._batch_size:
            self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="invocation-flusher")

    async def close(self, final_flush_timeout: float = 5.0) -> None:
        """Stop the flusher and try once to send what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), final_flush_timeout)

    async def flush(self) -> None:
        """Send every queued record, one batch at a time; on failure the unsent batch goes back to the front."""
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(self._batch_size, len(self._pending)))]
            try:
                await self._sink(batch)
            except BaseException:
                self._pending.extendleft(reversed(batch))
                raise
            if self._sent is not None:
                self._sent.inc(len(batch))

    async def _run(self) -> None:
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._interval)
            self._wakeup.clear()
            try:
                await self.flush()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(30.0, self._interval * 2**failures) * random.uniform(0.5, 1.0)
                log.warning("sending %d invocation records failed (%r); retry in %.1fs", self.pending, exc, delay)
                await asyncio.sleep(delay)
