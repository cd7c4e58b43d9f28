"""The gateway's invocation flusher: batches, retries after failures, bounded queue, never blocks a call."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from chutes.gateway.discovery import ServiceWatch
from chutes.gateway.metering import InvocationRecorder, InvocationSpool, encode_record, json_line
from chutes.gateway.utilisation import UtilisationReporter


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.reports: list[dict[str, Any]] = []
        self.failures = 0

    async def __call__(self, records: bytes, report: dict[str, Any] | None) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("scheduler down")
        batch = json.loads(records)  # the body's records array, as the scheduler reads it
        if batch:
            self.batches.append(batch)
        if report is not None:
            self.reports.append(report)


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
        rec.record(json_line({"n": n}))
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
        rec.record(json_line({"n": n}))
    await _until(lambda: sink.batches, timeout=5)
    assert [r["n"] for r in sink.batches[0]] == [0, 1, 2, 3, 4]
    await rec.close()


async def test_full_queue_drops_oldest_and_counts() -> None:
    registry = CollectorRegistry()
    dropped = Counter("dropped", "d", registry=registry)
    sink = Sink()
    rec = InvocationRecorder(sink, interval=10, batch_size=1000, max_pending=3, dropped=dropped)
    for n in range(5):
        rec.record(json_line({"n": n}))
    assert rec.pending == 3
    assert registry.get_sample_value("dropped_total") == 2
    await rec.close()  # the final flush sends what is left
    assert [r["n"] for r in sink.batches[0]] == [2, 3, 4]


CRASHING_GATEWAY = """
import asyncio, os, signal, sys
from chutes.gateway.metering import InvocationRecorder, InvocationSpool, encode_record, json_line

async def never(batch, report):
    raise ConnectionError("scheduler down")

async def main():
    rec = InvocationRecorder(never, interval=0.01, spool=InvocationSpool(sys.argv[1]))
    rec.start()
    for n in range(int(sys.argv[2])):
        rec.record(json_line({"invocation_id": f"inv-{n}", "n": n}))
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # a few failed sends, the files sealed and reopened
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_batch_stays_under_its_byte_cap_so_the_scheduler_never_refuses_it() -> None:
    """The scheduler refuses a JSON body over 1 MiB, and a refused batch would be retried for ever: batches are
    cut by size as well as by count (a record over the cap on its own still goes, alone)."""
    sink = Sink()
    bodies: list[int] = []

    async def measuring_sink(records: bytes, report: dict[str, Any] | None) -> None:
        bodies.append(len(records))
        await sink(records, report)

    rec = InvocationRecorder(measuring_sink, batch_size=100, batch_bytes=1000)
    lines = [json_line({"invocation_id": f"i{n}", "pad": "x" * 280}) for n in range(10)]
    big = json_line({"invocation_id": "big", "pad": "y" * 3000})
    for line in [*lines[:5], big, *lines[5:]]:
        rec.record(line)
    await rec.flush()
    assert [len(b) for b in sink.batches] == [3, 2, 1, 3, 2]  # ~300-byte records: three fit in 1000 bytes
    assert max(n for n in bodies if n < 3000) <= 1000 + 2
    sent = [r["invocation_id"] for b in sink.batches for r in b]
    assert sent == [f"i{n}" for n in range(5)] + ["big"] + [f"i{n}" for n in range(5, 10)]  # in order, all
    assert rec.pending == 0


async def test_calls_ending_while_a_batch_is_sent_wait_for_the_next_send() -> None:
    """Under steady traffic, a send goes once per interval (or full batch), not once per call that ended while the
    previous send was on its way (the flusher drained the queue until empty: a POST every call or two)."""
    sends: list[int] = []
    rec: InvocationRecorder | None = None

    async def slow_sink(records: bytes, report: dict[str, Any] | None) -> None:
        sends.append(len(json.loads(records)))
        assert rec is not None
        rec.record(json_line({"invocation_id": f"during-{len(sends)}"}))  # a call ends while this one is sent
        await asyncio.sleep(0.005)

    rec = InvocationRecorder(slow_sink, interval=0.2, batch_size=1000)
    rec.record(json_line({"invocation_id": "first"}))
    await asyncio.wait_for(rec.flush(), 2)  # draining until empty never ended here
    assert sends == [1]  # the call that ended during the send is left for the next flush
    assert rec.pending == 1
    await rec.flush()
    assert sends == [1, 1] and rec.pending == 1
    rec.start()
    await asyncio.sleep(0.5)  # the flusher's own loop: one send per interval, never back to back
    await rec.close(final_flush_timeout=0.5)
    assert 3 <= len(sends) <= 7, sends


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
    rec.record(json_line({"invocation_id": "inv-new", "n": 99}))
    await _until(lambda: sum(len(b) for b in sink.batches) == 29)
    await rec.close()
    assert not list(spool_dir.glob("*.jsonl")), "sent records must leave the spool"


async def test_unsent_records_stay_on_disk_and_a_live_owner_keeps_its_files(tmp_path: Path) -> None:
    sink = Sink()
    sink.failures = 10**6  # the scheduler is down throughout
    first = InvocationRecorder(sink, interval=0.02, spool=InvocationSpool(tmp_path))
    first.start()
    for n in range(5):
        first.record(json_line({"invocation_id": f"a-{n}"}))
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


def _watch(name: str, in_flight: dict[str, int], held: int = 0) -> ServiceWatch:
    watch = ServiceWatch(name, 0.0)
    watch.update([(key, "127.0.0.1", 1000 + n) for n, key in enumerate(in_flight)])
    for up in watch.upstreams:
        up.in_flight = in_flight[up.key]
    watch.holders = held
    return watch


async def test_the_report_reads_the_balancers_counters_and_counts_the_batchs_calls() -> None:
    watches = {
        "chute-c1": _watch("chute-c1", {"i1": 2, "i2": 0}),
        "chute-c2": _watch("chute-c2", {}, held=3),  # at zero instances, calls waiting
        "not-a-chute": _watch("not-a-chute", {"x": 5}),
    }
    reporter = UtilisationReporter(lambda: watches, "gw-1", clock=lambda: 1000.0)
    completed = [("c1", 990.5), ("c1", 996.0), ("c3", 900.0)]  # c3: a chute no longer watched
    report = reporter.report(completed)
    assert report == {
        "gateway_id": "gw-1",
        "at": 1000.0,
        "since": None,
        "chutes": {
            "c1": {"held": 0, "completed": 2, "last_call_at": 996.0,
                   "instances": {"i1": {"in_flight": 2}, "i2": {"in_flight": 0}}},
            "c2": {"held": 3, "completed": 0, "instances": {}},
            "c3": {"held": 0, "completed": 1, "last_call_at": 900.0, "instances": {}},
        },
    }  # fmt: skip
    reporter.sent(report)
    again = reporter.report([])  # nothing completed since: the latest call is still known while c1 is watched
    assert again["since"] == 1000.0
    assert again["chutes"]["c1"]["completed"] == 0 and again["chutes"]["c1"]["last_call_at"] == 996.0
    assert "c3" not in again["chutes"]  # neither watched nor called: forgotten


async def test_a_report_goes_every_interval_without_calls_and_a_failed_one_loses_no_count() -> None:
    watches = {"chute-c1": _watch("chute-c1", {"i1": 1})}
    sink = Sink()
    reporter = UtilisationReporter(lambda: watches, "gw-1")
    rec = InvocationRecorder(sink, interval=0.02, batch_size=100, reporter=reporter)
    rec.start()
    await _until(lambda: len(sink.reports) >= 3)  # no call at all: reports still go
    assert all(r["chutes"]["c1"]["instances"] == {"i1": {"in_flight": 1}} for r in sink.reports)
    assert all(r["chutes"]["c1"]["completed"] == 0 for r in sink.reports)
    sink.failures = 2  # the scheduler misses the batch with the calls twice
    for n in range(3):
        rec.record(encode_record(f"i{n}", "c1", "u1", "run", 200, 1000, 1, 1, 1_000_000), "c1", 1.001)
    await _until(lambda: sum(r["chutes"]["c1"]["completed"] for r in sink.reports) == 3, timeout=5)
    await rec.close()
    assert sum(r["chutes"]["c1"]["completed"] for r in sink.reports) == 3  # counted once, when accepted
    assert sum(len(b) for b in sink.batches) == 3


AWKWARD_STRINGS = [
    "plain",
    "ünïcødé ☃ 𝄞 文字",  # non-ASCII, one outside the BMP (a surrogate pair in JSON)
    'say "hi"',
    "back\\slash\\",
    "ctl\x00\x01\x08\t\n\r\x1f\x7f end",
    "</script><!-- '\u2028\u2029",
    "",
]
AWKWARD_NUMBERS = [  # (bytes, duration in µs, start in µs since the epoch)
    (0, 0, 0),
    (2**63 + 7, 1, 1733312345_123456),  # an int past 64 bits; the smallest duration
    (10**30, 123456_789, 10**16),
    (1, 10**15, 253402300799_999999),  # the scheduler's largest duration (1e12 ms) and last start (9999-12-31)
]


def test_encoded_records_parse_to_the_record_whatever_the_names_hold() -> None:
    for text in AWKWARD_STRINGS:
        for size, duration_us, started_us in AWKWARD_NUMBERS:
            line = encode_record("0f" * 16, f"chute-{text}", text, text, 599, duration_us, size, size * 3, started_us)
            assert json.loads(line) == {
                "invocation_id": "0f" * 16,
                "chute_id": f"chute-{text}",
                "caller": text,
                "cord": text,
                "status": 599,
                "duration_ms": duration_us / 1000,  # the same float: both are the nearest to the exact decimal
                "bytes_in": size,
                "bytes_out": size * 3,
                "started_at": started_us / 1_000_000,
            }
            assert line.count(b"\n") == 1 and line.endswith(b"\n")  # one journal line
            assert line.isascii()
        assert json.loads(encode_record(text, "c", "u", "run", 200, 0, 0, 0, 0))["invocation_id"] == text


def test_an_impossible_negative_time_is_written_as_zero_not_as_a_record_the_scheduler_refuses() -> None:
    record = json.loads(encode_record("id", "c", "u", "run", 200, -1, 0, 0, -5))
    assert record["duration_ms"] == record["started_at"] == 0.0


async def test_a_batch_body_is_the_records_joined_and_replays_send_the_journalled_lines(tmp_path: Path) -> None:
    sink = Sink()
    sink.failures = 10**6  # the scheduler is down: everything stays journalled
    first = InvocationRecorder(sink, interval=10, spool=InvocationSpool(tmp_path))
    records = [
        encode_record(f"id{n}", f"c{2 - n % 2}", 'u"1', AWKWARD_STRINGS[n % 7], 200, 1500, n, n, (100 + n) * 10**6)
        for n in range(6)
    ]
    for n, line in enumerate(records):
        first.record(line, "c1" if n % 2 else "c2", 100.0 + n)
    await first.close(final_flush_timeout=0.2)
    (journal,) = tmp_path.glob("*.jsonl")
    assert journal.read_bytes() == b"".join(records)  # one line per record, as encoded
    with journal.open("ab") as handle:
        handle.write(b'{"invocation_id":"cut-sh')  # the crash cut the last write short
    sink.failures = 0
    watches = {"chute-c1": _watch("chute-c1", {"i1": 0})}
    second = InvocationRecorder(
        sink, interval=0.02, spool=InvocationSpool(tmp_path), reporter=UtilisationReporter(lambda: watches, "gw")
    )
    second.start()
    await _until(lambda: sum(len(b) for b in sink.batches) == 6)
    await second.close()
    assert [r for b in sink.batches for r in b] == [json.loads(line) for line in records]
    completed = {cid: sum(r["chutes"].get(cid, {}).get("completed", 0) for r in sink.reports) for cid in ("c1", "c2")}
    assert completed == {"c1": 3, "c2": 3}  # the replayed records count as completions, per chute
    assert sink.reports[0]["chutes"]["c1"]["last_call_at"] == 105.0015  # started_at + duration_ms, from the line
    assert not list(tmp_path.glob("*.jsonl"))
