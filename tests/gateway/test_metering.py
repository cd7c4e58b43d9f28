"""The gateway's invocation flusher: batches, retries after failures, bounded queue, never blocks a call."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from chutes.gateway.metering import InvocationRecorder


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.failures = 0

    async def __call__(self, batch: list[dict[str, Any]]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("scheduler down")
        self.batches.append(batch)


async def _until(predicate: Any, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_records_arrive_in_batches_in_order() -> None:
    sink = Sink()
    rec = InvocationRecorder(sink, interval=0.05, batch_size=10)
    rec.start()
    for n in range(25):
        rec.record({"n": n})
    await _until(lambda: sum(len(b) for b in sink.batches) == 25)
    assert [r["n"] for b in sink.batches for r in b] == list(range(25))
    assert max(len(b) for b in sink.batches) <= 10
    await rec.close()


async def test_failed_sends_are_retried_without_loss() -> None:
    sink = Sink()
    sink.failures = 2
    rec = InvocationRecorder(sink, interval=0.02, batch_size=100)
    rec.start()
    for n in range(5):
        rec.record({"n": n})
    await _until(lambda: sink.batches, timeout=5)
    assert [r["n"] for r in sink.batches[0]] == [0, 1, 2, 3, 4]
    await rec.close()


async def test_full_queue_drops_oldest_and_counts() -> None:
    registry = CollectorRegistry()
    dropped = Counter("dropped", "d", registry=registry)
    sink = Sink()
    rec = InvocationRecorder(sink, interval=10, batch_size=1000, max_pending=3, dropped=dropped)
    for n in range(5):
        rec.record({"n": n})
    assert rec.pending == 3
    assert registry.get_sample_value("dropped_total") == 2
    await rec.close()  # the final flush sends what is left
    assert [r["n"] for r in sink.batches[0]] == [2, 3, 4]
