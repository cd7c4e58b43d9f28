"""A raft-like modify index with blocking waits, as both Nomad and Consul expose it.

Every mutation bumps one global, monotonically increasing index and records it against the *topics* it touched
("kv", "health:web", "job:x", ...). A blocking query remembers the index its client last saw and waits until
the index of the topics it reads moves past it, or until its wait time runs out. A return is no guarantee that
anything changed (the same contract as the real servers), so waking every waiter on every bump is correct.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from chutes.core.waiting import wait_event

DEFAULT_WAIT_S = 300.0
MAX_WAIT_S = 600.0


class IndexStore:
    """The global index, per-topic last-modified indexes, and a broadcast wake-up for blocking queries."""

    def __init__(self, start: int = 1) -> None:
        self.index = max(1, start)
        self._topics: dict[str, int] = {}
        self._changed = asyncio.Event()
        # Topics bumped since the last ``take_changed`` (what the snapshot journal records, instead of all topics).
        self._unsaved: set[str] = set()

    def bump(self, *topics: str) -> int:
        """Advance the index for a mutation touching ``topics`` and wake every blocked query."""
        self.index += 1
        for topic in topics:
            self._topics[topic] = self.index
        self._unsaved.update(topics)
        self._changed.set()
        self._changed = asyncio.Event()
        return self.index

    def of(self, *topics: str) -> int:
        """The last index at which any of ``topics`` changed (at least 1, as clients treat 0 as unset)."""
        return max([1, *(self._topics.get(t, 0) for t in topics)])

    def topics(self) -> dict[str, int]:
        """Every topic's index (and nothing left unsaved: this is what a full snapshot holds)."""
        self._unsaved.clear()
        return dict(self._topics)

    def take_changed(self) -> dict[str, int]:
        """The topics bumped since the last call (or ``topics``), with their indexes."""
        out = {t: self._topics[t] for t in self._unsaved}
        self._unsaved.clear()
        return out

    def restore(self, index: int, topics: dict[str, int]) -> None:
        self.index = max(self.index, index)
        for topic, idx in topics.items():
            self._topics[topic] = max(idx, self._topics.get(topic, 0))

    async def wait_past(self, current: Callable[[], int], min_index: int, wait_s: float) -> None:
        """Return once ``current()`` exceeds ``min_index`` or ``timeout`` seconds have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        while current() <= min_index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            event = self._changed
            if not await wait_event(event, remaining):
                return

    async def wait_topics(self, topics: Iterable[str], min_index: int, wait_s: float) -> None:
        names = tuple(topics)
        await self.wait_past(lambda: self.of(*names), min_index, wait_s)
