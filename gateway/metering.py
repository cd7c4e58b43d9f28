"""Invocation records: collected per call, sent to the scheduler in batches by a background flusher.

``record`` only appends to a bounded queue, so metering never slows or fails a call. A record is encoded
once, as the JSON line it is journalled as (``encode_record``, from its typed fields); the queue keeps those
bytes and a batch's body is their join into a JSON array, never a second encoding. The flusher sends a
batch every ``interval`` seconds (or as soon as ``batch_size`` records wait); a failed send keeps the batch
and retries with backoff. With a ``reporter`` (``chutes.gateway.utilisation``) each batch carries the
gateway's utilisation snapshot, and one is sent every ``interval`` even without records, so that the
scheduler's autoscaler sees an idle chute's zero as well as a busy one's load.

When the queue is full (scheduler down for long), the oldest records leave memory
and are counted in ``chutes_gateway_invocations_dropped_total``.

With a spool directory nothing is lost to a crash either: every record is appended to a journal file as it
is queued (one ``write`` per call, no ``fsync``: a killed process loses nothing the kernel has), and a file
is deleted once the scheduler has accepted every record in it. A gateway that starts replays the files no
other live gateway holds (each holds a ``flock`` on its own). Records sent but not yet deleted when the
process died are sent again; the scheduler ignores invocation ids it already has, so nothing counts twice.
A record dropped from the full queue stays in its file and is replayed by the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter

from chutes.core.waiting import wait_event

try:  # the record's formatting in C (gateway/_records.c), built by the install where a compiler is
    from chutes.gateway._records import format_record as _format_record
except ImportError:  # not built: the pure-Python form serves, with the same bytes
    _format_record = None  # type: ignore[assignment]
NATIVE = _format_record is not None  # whether ``encode_record`` formats in C here

log = logging.getLogger(__name__)

# (records: a JSON array of invocation records, utilisation report)
Sink = Callable[[bytes, dict[str, Any] | None], Awaitable[None]]
Completion = tuple[str, float]  # (chute id, when the call ended): what the utilisation report counts


_MIDDLES_KEPT = 4096
# (chute id, caller, cord) -> the record's text between the invocation id and the status, escaped once: a busy
# chute's calls repeat the same few, and json's escaper was a third of a record's cost.
_middles: dict[tuple[str, str, str], bytes] = {}


def encode_record(
    invocation_id: str,
    chute_id: str,
    caller: str,
    cord: str,
    status: int,
    duration_us: int,
    bytes_in: int,
    bytes_out: int,
    started_us: int,
) -> bytes:
    """One invocation record as its journal line: a JSON object and a newline. Strings go through json's own
    escaper (they may hold anything a user named); ``duration_ms`` and ``started_at`` (seconds since the epoch)
    are written from whole microseconds as decimals with 3 and 6 places, never through a float's ``repr``
    (which cost more than the rest of the record)."""
    key = (chute_id, caller, cord)
    middle = _middles.get(key)
    if middle is None:
        e = encode_basestring_ascii
        middle = f',"chute_id":{e(chute_id)},"caller":{e(caller)},"cord":{e(cord)},"status":'.encode()
        if len(_middles) >= _MIDDLES_KEPT:  # bounded: many callers only cost escaping again
            _middles.clear()
        _middles[key] = middle
    if _format_record is not None:
        line = _format_record(invocation_id, middle, status, duration_us, bytes_in, bytes_out, started_us)
        if line is not None:  # None: an id that needs escaping
            return line
    return format_record(invocation_id, middle, status, duration_us, bytes_in, bytes_out, started_us)


def format_record(
    invocation_id: str, middle: bytes, status: int, duration_us: int, bytes_in: int, bytes_out: int, started_us: int
) -> bytes:
    """``encode_record``'s line from the escaped ``middle`` (the pure-Python form of gateway/_records.c)."""
    duration_us = max(duration_us, 0)
    started_us = max(started_us, 0)
    if invocation_id.isascii() and invocation_id.isalnum():  # the gateway's own ids (hex): nothing to escape
        quoted = b'"%b"' % invocation_id.encode()
    else:
        quoted = encode_basestring_ascii(invocation_id).encode()
    return b'{"invocation_id":%b%b%d,"duration_ms":%d.%03d,"bytes_in":%d,"bytes_out":%d,"started_at":%d.%06d}\n' % (
        quoted, middle, status, duration_us // 1000, duration_us % 1000, bytes_in, bytes_out,
        started_us // 1_000_000, started_us % 1_000_000,
    )  # fmt: skip


def json_line(record: Mapping[str, Any]) -> bytes:
    """Any record as a journal line (``encode_record`` is the gateway's fast path for its own records)."""
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


class Reporter(Protocol):
    """What the flusher asks for the report sent with a batch (``chutes.gateway.utilisation``)."""

    def report(self, completed: Sequence[Completion]) -> dict[str, Any]: ...

    def sent(self, report: Mapping[str, Any]) -> None: ...


@dataclass(eq=False)
class Segment:
    """One journal file: its records are all sent once ``unsent`` is zero and it is no longer written to."""

    path: Path
    fd: int  # open (and flock'ed) until the file is deleted
    unsent: int = 0
    written: int = 0
    sealed: bool = False


Pending = tuple[bytes, str, float, Segment | None]  # (journal line, chute id, end time, its journal file)


class InvocationSpool:
    """Journal files of invocation records in ``directory`` (one JSON object per line)."""

    def __init__(self, directory: str | Path, max_segment_records: int = 10_000) -> None:
        self.directory = Path(directory)
        self.max_segment_records = max_segment_records
        self.current: Segment | None = None
        self._segments: set[Segment] = set()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def segments(self) -> int:
        return len(self._segments)

    def recover(self) -> list[Pending]:
        """The records of journal files left behind by a gateway that is gone (oldest first)."""
        found: list[Pending] = []
        for path in sorted(self.directory.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name)):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # deleted by its owner meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # a live gateway owns it
                continue
            records = list(_read_journal(path))
            segment = Segment(path, fd, unsent=len(records), written=len(records), sealed=True)
            self._segments.add(segment)
            if not records:
                self._done(segment)
                continue
            found.extend((line, chute_id, ended, segment) for line, chute_id, ended in records)
        return found

    def append(self, line: bytes) -> Segment:
        """Journal one record's line (a single write), starting a new file when needed; raises OSError."""
        segment = self.current
        if segment is None or segment.written >= self.max_segment_records:
            self.seal()
            segment = self._open()
        os.write(segment.fd, line)
        segment.unsent += 1
        segment.written += 1
        return segment

    def seal(self) -> None:
        """Stop writing to the current file; it is deleted once all its records are sent."""
        segment, self.current = self.current, None
        if segment is not None:
            segment.sealed = True
            if segment.unsent <= 0:
                self._done(segment)

    def ack(self, segment: Segment, count: int) -> None:
        segment.unsent -= count
        if segment.sealed and segment.unsent <= 0:
            self._done(segment)

    def close(self) -> int:
        """Release every file (kept on disk for the next start); returns the records still unsent."""
        left = sum(max(0, s.unsent) for s in self._segments)
        for segment in list(self._segments):
            self._segments.discard(segment)
            if segment.unsent <= 0:
                segment.path.unlink(missing_ok=True)
            os.close(segment.fd)
        self.current = None
        return left

    def _open(self) -> Segment:
        name = f"{time.time_ns():020d}-{os.getpid()}.jsonl"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        segment = Segment(path, fd)
        self._segments.add(segment)
        self.current = segment
        return segment

    def _done(self, segment: Segment) -> None:
        if segment in self._segments:
            self._segments.discard(segment)
            segment.path.unlink(missing_ok=True)  # unlinked while still locked: no one else can replay it
            os.close(segment.fd)


def _read_journal(path: Path) -> list[tuple[bytes, str, float]]:
    """The complete records of a journal file: each line as it is (sent as it was written) and its completion."""
    records = []
    with path.open("rb") as handle:
        for line in handle:
            try:
                value = json.loads(line)
            except ValueError:
                continue  # a line cut short by the crash: that call's record was never complete
            if isinstance(value, dict) and value.get("invocation_id"):
                if not line.endswith(b"\n"):
                    line += b"\n"  # a whole object without its newline: a file ending cut between the two
                records.append((line, *_completion(value)))
    return records


def _completion(record: Mapping[str, Any]) -> Completion:
    chute_id = record.get("chute_id")
    try:
        ended = float(record.get("started_at") or 0) + float(record.get("duration_ms") or 0) / 1000
    except (TypeError, ValueError):
        ended = 0.0
    return (chute_id if isinstance(chute_id, str) else "", ended)


# The scheduler refuses a JSON body over 1 MiB (``chutes.scheduler.api.limits``): a batch's records stop short of
# half of that, whatever their names hold, so that the utilisation report beside them always fits too. A batch
# it refused would be sent again, and refused again, for ever.
BATCH_BYTES = 512 * 1024


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
        spool: InvocationSpool | None = None,
        reporter: Reporter | None = None,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self._sink = sink
        self._reporter = reporter
        self._interval = interval
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._spool = spool
        self._spool_failed = False
        self._pending: deque[Pending] = deque()
        self._max_pending = max_pending
        self._dropped = dropped
        self._sent = sent
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, line: bytes, chute_id: str = "", ended: float = 0.0) -> None:
        """Queue one record, ``line`` as ``encode_record`` makes it, of a call to ``chute_id`` that ended at
        ``ended`` (never blocks, never raises)."""
        segment: Segment | None = None
        if self._spool is not None:
            try:
                segment = self._spool.append(line)
                self._spool_failed = False
            except OSError as exc:
                if not self._spool_failed:  # once per outage, not once per call
                    log.error("cannot journal invocation records (%r): keeping them in memory only", exc)
                self._spool_failed = True
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()  # still in its journal file (if any): the next start replays it
            if self._dropped is not None:
                self._dropped.inc()
        self._pending.append((line, chute_id, ended, segment))
        if len(self._pending) >= self._batch_size:
            self._wakeup.set()

    def start(self) -> None:
        """Replay what a previous gateway left in the spool, then start the flusher."""
        if self._spool is not None:
            recovered = self._spool.recover()
            if recovered:
                log.info("replaying %d invocation records left in %s", len(recovered), self._spool.directory)
                self._pending.extendleft(reversed(recovered))
                self._wakeup.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="invocation-flusher")

    async def close(self, final_flush_timeout: float = 5.0) -> None:
        """Stop the flusher and try once to send what is left (what fails stays in the spool)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(final_flush_timeout):
                await self.flush()
        if self._spool is not None:
            left = self._spool.close()
            if left:
                log.warning("%d invocation records kept in %s for the next start", left, self._spool.directory)
        elif self._pending:
            log.warning("%d invocation records could not be sent and are lost (no spool directory)", self.pending)

    async def flush(self) -> None:
        """Send the records queued now, one batch at a time (with a reporter, at least one batch, maybe empty,
        with the utilisation report); on failure the unsent batch goes back to the front. Records queued while
        it sends wait for the next flush: draining until the queue is empty sent a batch of the one or two calls
        that ended during each send, back to back, as long as calls kept coming."""
        if self._spool is not None and self._pending:
            self._spool.seal()  # what is queued now lives in files that can go once it is sent
        report_due = self._reporter is not None
        due = len(self._pending)
        while True:
            due = min(due, len(self._pending))  # the oldest may have been dropped (max_pending) meanwhile
            if due <= 0 and not report_due:
                break
            report_due = False
            batch = self._take(min(self._batch_size, due))
            due -= len(batch)
            records = b"[" + b",".join([line for line, _, _, _ in batch]) + b"]"  # newlines are JSON whitespace
            report = None if self._reporter is None else self._reporter.report([(c, e) for _, c, e, _ in batch])
            try:
                await self._sink(records, report)
            except BaseException:
                self._pending.extendleft(reversed(batch))
                raise
            if self._reporter is not None and report is not None:
                self._reporter.sent(report)
            if self._spool is not None:
                per_file: dict[Segment, int] = {}
                for _, _, _, seg in batch:
                    if seg is not None:
                        per_file[seg] = per_file.get(seg, 0) + 1
                for segment, count in per_file.items():
                    self._spool.ack(segment, count)
            if self._sent is not None:
                self._sent.inc(len(batch))

    def _take(self, most: int) -> list[Pending]:
        """Up to ``most`` of the oldest records, fewer when they would pass ``batch_bytes`` (one at least)."""
        pending, limit = self._pending, self._batch_bytes
        batch: list[Pending] = []
        size = 0
        while len(batch) < most:
            size += len(pending[0][0]) + 1
            if batch and size > limit:
                break
            batch.append(pending.popleft())
        return batch

    async def _run(self) -> None:
        failures = 0
        while True:
            await wait_event(self._wakeup, self._interval)
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
