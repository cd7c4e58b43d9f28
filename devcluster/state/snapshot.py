"""The devcluster's state in ``--data-dir``: a JSON snapshot plus an append-only journal of changes since it.

An acknowledged write must be on disk before its reply, but rewriting the whole state for every write makes
registering N services cost O(N²) (10,000 agents took hours). So each flush appends one JSON line holding only
what changed (see ``Devcluster._delta``), and the snapshot is rewritten ("compacted") only when the journal has
grown past the snapshot's own size: a write costs its own size, amortised. Loading reads the snapshot, replays
the journal over it, and compacts at once, so a journal torn by a kill never gets appended to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "state.json"
JOURNAL_SUFFIX = ".journal"
# The journal is compacted once it is larger than the snapshot (amortised O(1) per write) or than this floor.
COMPACT_MIN_BYTES = 1 << 20

Collect = Callable[[], dict[str, Any]]
Delta = Callable[[], dict[str, Any] | None]
Replay = Callable[[dict[str, Any], dict[str, Any]], None]


def _open_private(path: Path, flags: int) -> int:
    # Owner-only: the state holds Nomad Variables (secrets) in clear.
    return os.open(path, flags, 0o600)


class Snapshotter:
    """Marks state dirty on change; journals the changes after each write and at most every ``interval_s``.

    ``collect`` returns the whole state (it also resets what ``delta`` reports); ``delta`` returns what changed
    since the last ``collect`` or ``delta`` (None when nothing did); ``replay(state, record)`` applies one
    journal record to a loaded state in place.
    """

    def __init__(
        self,
        path: Path,
        collect: Collect,
        delta: Delta | None = None,
        replay: Replay | None = None,
        interval_s: float = 0.2,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
    ) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + JOURNAL_SUFFIX)
        self.collect = collect
        self.delta = delta
        self.replay = replay
        self.interval_s = interval_s
        self.compact_min_bytes = compact_min_bytes
        self.dirty = False
        self._snapshot_bytes = 0
        self._journal_bytes = 0
        # Set when a full write failed after ``collect`` reset the deltas: only a full write is complete then.
        self._need_full = delta is None
        # Bumped by every full write; journal records carry it, so a kill between writing a snapshot and removing
        # the journal never replays records that the snapshot already supersedes.
        self._generation = 0
        self._task: asyncio.Task[None] | None = None

    def mark(self) -> None:
        self.dirty = True

    def load(self) -> dict[str, Any] | None:
        data: dict[str, Any] | None = None
        if self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                broken = self.path.with_suffix(".broken")
                log.error("snapshot %s is unreadable (%s); moved to %s, starting empty", self.path, exc, broken)
                self.path.replace(broken)
                self.journal_path.unlink(missing_ok=True)
                return None
            data = loaded if isinstance(loaded, dict) else None
        self._generation = int((data or {}).get("journal_generation", 0))
        if self.journal_path.exists() and self.replay is not None:
            replayed = 0
            with self.journal_path.open("rb") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        # Only the last line can be torn (a kill mid-append); its write was never acknowledged.
                        log.warning("journal %s ends in a torn record; ignoring it", self.journal_path)
                        break
                    if not isinstance(record, dict) or record.get("gen") != self._generation:
                        continue
                    if data is None:
                        data = {}
                    self.replay(data, record)
                    replayed += 1
            log.info("replayed %d journal records from %s", replayed, self.journal_path)
        # The first write after a load is a full one: it must not append after a torn line, and what was just
        # restored is not a change to journal.
        self._need_full = self._need_full or data is not None or self.journal_path.exists()
        return data

    def write(self) -> None:
        """Write the whole state and empty the journal."""
        self._need_full = True  # until the write below has landed
        generation = self._generation + 1
        data = json.dumps({**self.collect(), "journal_generation": generation}).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        # No fsync: the file must survive the devcluster being killed (the OS keeps the data), not power loss.
        with os.fdopen(_open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as handle:
            handle.write(data)
        tmp.replace(self.path)
        self._generation = generation
        self.journal_path.unlink(missing_ok=True)
        self._snapshot_bytes = len(data)
        self._journal_bytes = 0
        self._need_full = self.delta is None
        self.dirty = False

    def flush(self) -> None:
        """Persist now if anything changed (after a write request, so an acknowledged write survives a crash)."""
        if not self.dirty:
            return
        if self._need_full or self.delta is None:
            self.write()
            return
        record = self.delta()
        self.dirty = False
        if record is None:
            return
        line = json.dumps({**record, "gen": self._generation}, separators=(",", ":")).encode() + b"\n"
        try:
            with os.fdopen(_open_private(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as f:
                f.write(line)
        except OSError:
            self._need_full = self.dirty = True  # the delta is consumed: the next flush writes everything
            raise
        self._journal_bytes += len(line)
        if self._journal_bytes > max(self.compact_min_bytes, self._snapshot_bytes):
            self.write()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="snapshot")

    async def stop(self) -> None:
        """Stop the loop and write a final snapshot."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.write()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if not self.dirty:
                continue
            try:
                self.flush()
            except Exception:
                log.exception("writing snapshot %s failed; keeping the previous one", self.path)
