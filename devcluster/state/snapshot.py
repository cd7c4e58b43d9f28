"""Atomic JSON snapshots of the devcluster's state in ``--data-dir``, written shortly after each change."""

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


class Snapshotter:
    """Marks state dirty on change and writes it at most every ``interval_s``; never loses the last good file."""

    def __init__(self, path: Path, collect: Callable[[], dict[str, Any]], interval_s: float = 0.2) -> None:
        self.path = path
        self.collect = collect
        self.interval_s = interval_s
        self.dirty = False
        self._task: asyncio.Task[None] | None = None

    def mark(self) -> None:
        self.dirty = True

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            broken = self.path.with_suffix(".broken")
            log.error("snapshot %s is unreadable (%s); moved to %s, starting empty", self.path, exc, broken)
            self.path.replace(broken)
            return None
        return data if isinstance(data, dict) else None

    def write(self) -> None:
        data = json.dumps(self.collect())
        tmp = self.path.with_name(self.path.name + ".tmp")
        # No fsync: the file must survive the devcluster being killed (the OS keeps the data), not power loss.
        # Owner-only: it holds Nomad Variables (secrets) in clear.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
        tmp.replace(self.path)
        self.dirty = False

    def flush(self) -> None:
        """Write now if anything changed (after a write request, so an acknowledged write survives a crash)."""
        if self.dirty:
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
                self.write()
            except Exception:
                log.exception("writing snapshot %s failed; keeping the previous one", self.path)
