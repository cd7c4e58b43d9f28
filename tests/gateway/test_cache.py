"""TTL cache: positive and negative TTLs, single-flight loads, stale-if-error."""

from __future__ import annotations

import asyncio

import pytest

from chutes.gateway.cache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Loader:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.values: dict[str, str | None] = {}
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def __call__(self, key: str) -> str | None:
        self.calls.append(key)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("scheduler down")
        return self.values.get(key)


async def test_values_live_for_ttl_and_misses_for_negative_ttl() -> None:
    clock, loader = Clock(), Loader()
    loader.values["k"] = "v"
    cache: TTLCache[str, str] = TTLCache(loader, ttl=10, negative_ttl=2, clock=clock)
    assert await cache.get("k") == "v"
    assert await cache.get("missing") is None
    clock.now = 1.9
    assert await cache.get("k") == "v" and await cache.get("missing") is None
    assert loader.calls == ["k", "missing"]
    clock.now = 2.1
    loader.values["missing"] = "now here"
    assert await cache.get("missing") == "now here"
    clock.now = 10.1
    loader.values["k"] = "v2"
    assert await cache.get("k") == "v2"
    assert loader.calls == ["k", "missing", "missing", "k"]


async def test_concurrent_misses_share_one_load() -> None:
    loader = Loader()
    loader.values["k"] = "v"
    loader.gate = asyncio.Event()
    cache: TTLCache[str, str] = TTLCache(loader, ttl=10, negative_ttl=1)
    waiters = [asyncio.create_task(cache.get("k")) for _ in range(20)]
    await asyncio.sleep(0.01)
    loader.gate.set()
    assert await asyncio.gather(*waiters) == ["v"] * 20
    assert loader.calls == ["k"]


async def test_a_cancelled_caller_does_not_cancel_the_load_for_others() -> None:
    loader = Loader()
    loader.values["k"] = "v"
    loader.gate = asyncio.Event()
    cache: TTLCache[str, str] = TTLCache(loader, ttl=10, negative_ttl=1)
    first = asyncio.create_task(cache.get("k"))
    second = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0.01)
    first.cancel()
    loader.gate.set()
    assert await second == "v"


async def test_stale_value_served_while_the_loader_fails_then_errors_surface() -> None:
    clock, loader = Clock(), Loader()
    loader.values["k"] = "v"
    cache: TTLCache[str, str] = TTLCache(loader, ttl=10, negative_ttl=1, stale_for=60, clock=clock)
    assert await cache.get("k") == "v"
    loader.fail = True
    clock.now = 30
    assert await cache.get("k") == "v"
    clock.now = 71
    with pytest.raises(RuntimeError, match="scheduler down"):
        await cache.get("k")
    with pytest.raises(RuntimeError):
        await cache.get("never-loaded")


async def test_bounded_size() -> None:
    loader = Loader()
    cache: TTLCache[str, str] = TTLCache(loader, ttl=10, negative_ttl=10, max_entries=100)
    for n in range(1000):
        await cache.get(str(n))
    assert len(cache) <= 100


async def test_an_invalidated_entry_is_never_served_stale() -> None:
    clock, loader = Clock(), Loader()
    loader.values["k"] = "v"
    cache: TTLCache[str, str] = TTLCache(loader, ttl=10, negative_ttl=1, stale_for=300, clock=clock)
    assert await cache.get("k") == "v"
    assert cache.invalidate("k") is True
    assert cache.invalidate("k") is False  # already gone
    loader.fail = True  # the scheduler is down: without the entry there is nothing to serve
    with pytest.raises(RuntimeError, match="scheduler down"):
        await cache.get("k")


async def test_a_revoked_key_stays_refused_while_the_loader_fails() -> None:
    clock, loader = Clock(), Loader()
    loader.values["key-1"] = "alice"
    cache: TTLCache[str, str] = TTLCache(
        loader, ttl=30, negative_ttl=5, stale_for=300, clock=clock, alias=lambda k: k.upper()
    )
    assert await cache.get("key-1") == "alice"
    assert cache.invalidate_alias("KEY-1", gone=True) is True
    assert cache.invalidate_alias("KEY-2", gone=True) is False  # never cached: nothing to do
    loader.fail = True
    assert await cache.get("key-1") is None  # refused at once: no error, no stale value, no call to the loader
    clock.now = 200
    assert await cache.get("key-1") is None
    assert loader.calls == ["key-1"]
    clock.now = 301  # the tombstone is gone: the scheduler is asked again (and says so itself)
    loader.fail = False
    loader.values.pop("key-1")
    assert await cache.get("key-1") is None
    assert loader.calls == ["key-1", "key-1"]


async def test_a_load_overtaken_by_an_invalidation_is_repeated_not_stored() -> None:
    loader = Loader()
    loader.values["k"] = "before"
    loader.gate = asyncio.Event()
    cache: TTLCache[str, str] = TTLCache(loader, ttl=10, negative_ttl=1)
    waiter = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0.01)
    loader.values["k"] = "after"  # the change lands while the first answer is on its way
    cache.invalidate("k")
    loader.gate.set()
    assert await waiter == "after"
    assert await cache.get("k") == "after"
    assert loader.calls == ["k", "k"]


async def test_invalidate_where_and_clear() -> None:
    loader = Loader()
    loader.values.update({"a1": "alice", "a2": "alice", "b1": "bob"})
    cache: TTLCache[str, str] = TTLCache(loader, ttl=10, negative_ttl=1)
    for key in ("a1", "a2", "b1", "nobody"):
        await cache.get(key)
    assert cache.invalidate_where(lambda _k, v: v == "alice") == 2
    assert "b1" in cache and "a1" not in cache and "nobody" in cache
    cache.clear()
    assert len(cache) == 0
