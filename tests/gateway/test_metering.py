"""The gateway's invocation flusher: batches, retries after failures, bounded queue, never blocks a call."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from chutes.gateway.metering import InvocationRecorder, InvocationSpool


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


CRASHING_GATEWAY = """
import asyncio, os, signal, sys
from chutes.gateway.metering import InvocationRecorder, InvocationSpool

async def never(batch):
    raise ConnectionError("scheduler down")

async def main():
    rec = InvocationRecorder(never, interval=0.01, spool=InvocationSpool(sys.argv[1]))
    rec.start()
    for n in range(int(sys.argv[2])):
        rec.record({"invocation_id": f"inv-{n}", "n": n})
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # a few failed sends, the files sealed and reopened
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_records_journalled_before_a_crash_are_replayed_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    crashed = subprocess.run([sys.executable, "-c", CRASHING_GATEWAY, str(spool_dir), "28"], timeout=60)
    assert crashed.returncode == -signal.SIGKILL
    assert list(spool_dir.glob("*.jsonl")), "nothing was journalled"
    sink = Sink()
    rec = InvocationRecorder(sink, interval=0.02, spool=InvocationSpool(spool_dir))
    rec.start()
    await _until(lambda: sum(len(b) for b in sink.batches) >= 28)
    sent = [r["invocation_id"] for b in sink.batches for r in b]
    assert sorted(sent) == sorted(f"inv-{n}" for n in range(28))  # each once, none lost
    rec.record({"invocation_id": "inv-new", "n": 99})
    await _until(lambda: sum(len(b) for b in sink.batches) == 29)
    await rec.close()
    assert not list(spool_dir.glob("*.jsonl")), "sent records must leave the spool"


async def test_unsent_records_stay_on_disk_and_a_live_owner_keeps_its_files(tmp_path: Path) -> None:
    sink = Sink()
    sink.failures = 10**6  # the scheduler is down throughout
    first = InvocationRecorder(sink, interval=0.02, spool=InvocationSpool(tmp_path))
    first.start()
    for n in range(5):
        first.record({"invocation_id": f"a-{n}"})
    await asyncio.sleep(0.1)
    assert InvocationSpool(tmp_path).recover() == []  # a second gateway leaves the live one's files alone
    await first.close(final_flush_timeout=0.2)  # SIGTERM with the scheduler down: kept for the next start
    assert list(tmp_path.glob("*.jsonl"))
    sink.failures = 0
    second = InvocationRecorder(sink, interval=0.02, spool=InvocationSpool(tmp_path))
    second.start()
    await _until(lambda: sum(len(b) for b in sink.batches) == 5)
    await second.close()
    assert sorted(r["invocation_id"] for b in sink.batches for r in b) == [f"a-{n}" for n in range(5)]
    assert not list(tmp_path.glob("*.jsonl"))
