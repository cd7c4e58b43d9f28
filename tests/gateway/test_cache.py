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
