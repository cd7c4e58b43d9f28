"""The KV publisher's write rules and duplicate-writer detection, over a store with Consul's CAS semantics.

The daemon tests run the same publisher against the devcluster's Consul; here time and interleavings are
driven step by step.
"""

from __future__ import annotations

import logging

import pytest

from chutes.agent.backoff import Backoff
from chutes.agent.kv import KVEntry, KVPublisher, Outcome

KEY = "chutes/nodes/n1"


class CasKV:
    """Consul KV semantics for one datacenter: a global index, ModifyIndex per key, ``cas`` on PUT."""

    def __init__(self) -> None:
        self.index = 10
        self.data: dict[str, KVEntry] = {}
        self.puts = 0

    async def get(self, key: str) -> KVEntry | None:
        return self.data.get(key)

    async def put(self, key: str, value: bytes, cas: int) -> bool:
        self.puts += 1
        current = self.data.get(key)
        if (cas == 0 and current is not None) or (cas != 0 and (current is None or current.modify_index != cas)):
            return False
        self.index += 1
        self.data[key] = KVEntry(self.index, value)
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def publisher(kv: CasKV, clock: Clock, refresh: float = 60.0) -> KVPublisher:
    return KVPublisher(kv, KEY, refresh, clock=clock, backoff=Backoff(base=2 * refresh, cap=600, rng=lambda: 1.0))


async def test_writes_on_change_and_on_refresh_only() -> None:
    kv, clock = CasKV(), Clock()
    p = publisher(kv, clock)
    assert await p.publish(b"v1", "f1") is Outcome.WRITTEN
    assert kv.data[KEY].value == b"v1"
    clock.t += 10
    assert await p.publish(b"v1-newer-timestamp", "f1") is Outcome.SKIPPED
    assert await p.publish(b"v2", "f2") is Outcome.WRITTEN
    clock.t += 59
    assert await p.publish(b"v2b", "f2") is Outcome.SKIPPED
    clock.t += 1
    assert await p.publish(b"v2c", "f2") is Outcome.WRITTEN
    assert kv.data[KEY].value == b"v2c"
    assert p.conflicts == 0


async def test_a_restarted_consul_is_not_a_conflict() -> None:
    kv, clock = CasKV(), Clock()
    p = publisher(kv, clock)
    await p.publish(b"v1", "f1")
    # Consul loses its state: the key is gone and the index restarts lower.
    kv.data.clear()
    kv.index = 1
    assert await p.publish(b"v2", "f2") is Outcome.WRITTEN
    assert kv.data[KEY].value == b"v2"
    # Consul restored a snapshot with our last value under another index.
    kv.data[KEY] = KVEntry(500, b"v2")
    kv.index = 500
    assert await p.publish(b"v3", "f3") is Outcome.WRITTEN
    assert p.conflicts == 0 and not p.conflict


async def test_an_agent_restarting_over_its_old_value_is_not_a_conflict() -> None:
    kv, clock = CasKV(), Clock()
    await publisher(kv, clock).publish(b"old", "f0")
    fresh = publisher(kv, clock)
    assert await fresh.publish(b"new", "f1") is Outcome.WRITTEN
    assert fresh.conflicts == 0


async def test_two_writers_both_detect_then_one_steps_back(caplog: pytest.LogCaptureFixture) -> None:
    kv, clock = CasKV(), Clock()
    a, b = publisher(kv, clock), publisher(kv, clock)
    caplog.set_level(logging.ERROR)
    assert await a.publish(b"from-a", "fa") is Outcome.WRITTEN
    assert await b.publish(b"from-b", "fb") is Outcome.WRITTEN  # b started later and took the key over
    clock.t += 60
    assert await a.publish(b"from-a", "fa") is Outcome.CONFLICT  # a notices, writes once more, steps back
    assert kv.data[KEY].value == b"from-a"
    clock.t += 60
    assert await b.publish(b"from-b", "fb") is Outcome.CONFLICT  # ... so b notices too
    assert a.conflicts == 1 and b.conflicts == 1
    assert "Two agents share this node id" in caplog.text

    # Both are paused; nobody writes until its backoff is over.
    puts = kv.puts
    clock.t += 60
    assert await a.publish(b"from-a", "fa") is Outcome.PAUSED
    assert await b.publish(b"from-b", "fb") is Outcome.PAUSED
    assert kv.puts == puts

    # a looks first after its backoff and sees b's last write (newer than its own look): a stays back.
    clock.t += 60
    assert await a.publish(b"from-a", "fa") is Outcome.PAUSED
    # b looks and finds the key untouched since its own write: b takes over.
    clock.t += 60
    assert await b.publish(b"from-b", "fb") is Outcome.WRITTEN
    assert not b.conflict and a.conflict
    for _ in range(5):  # b keeps refreshing, a keeps watching without writing
        clock.t += 60
        assert await b.publish(b"from-b", "fb") is Outcome.WRITTEN
        assert await a.publish(b"from-a", "fa") is Outcome.PAUSED
    assert kv.data[KEY].value == b"from-b"
    assert (a.conflicts, b.conflicts) == (1, 1)  # each reported once, no fight

    # b goes away: a finds the key quiet at its next look and publishes again.
    clock.t += 1200
    assert await a.publish(b"from-a", "fa") is Outcome.PAUSED  # first look after the pause records the index
    clock.t += 1200
    assert await a.publish(b"from-a", "fa") is Outcome.WRITTEN
    assert kv.data[KEY].value == b"from-a" and not a.conflict


async def test_conflict_callback_is_called() -> None:
    kv, clock = CasKV(), Clock()
    seen: list[int] = []
    a = KVPublisher(kv, KEY, 60, clock=clock, on_conflict=lambda: seen.append(1))
    await a.publish(b"a", "fa")
    kv.data[KEY] = KVEntry(99, b"someone else")
    clock.t += 60
    assert await a.publish(b"a", "fa") is Outcome.CONFLICT
    assert seen == [1]
