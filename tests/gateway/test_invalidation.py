"""Access-change notices through a real Consul KV (the devcluster's): the scheduler's publisher, the gateway's
follower, and the caches they act on. Exactly the named entries go, within one blocking round; a gateway
that missed notices drops everything; ``CONSUL_HTTP_TOKEN`` never overrides an explicit token."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from chutes.core.consul_client import consul_aio
from chutes.core.invalidation import KEEP_NOTICES, Notice, NoticeLog, append, pending
from chutes.gateway.cache import TTLCache
from chutes.gateway.invalidation import GatewayCaches, InvalidationFollower, key_alias
from chutes.gateway.routes import Identity
from chutes.scheduler.invalidation import InvalidationPublisher
from tests.support.devcluster import DevclusterHandle, devcluster

pytestmark = pytest.mark.timeout(60)


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 3.0) -> float:
    """Wait for ``predicate``; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        assert loop.time() - start < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)
    return loop.time() - start


def test_notice_log_numbers_trims_and_detects_gaps() -> None:
    log = None
    for n in range(3):
        log = append(log, Notice(routes=[("alice", f"c{n}")]), now=1000.0 + n)
    assert log is not None and log.seq == 3 and [n.seq for n in log.notices] == [1, 2, 3]
    assert [n.routes for n in pending(log, log.epoch, 1) or []] == [[("alice", "c1")], [("alice", "c2")]]
    assert pending(log, log.epoch, 3) == []
    assert pending(log, "another epoch", 1) is None
    for n in range(KEEP_NOTICES + 5):
        log = append(log, Notice(keys=[f"{n:064x}"]), now=1010.0)
    assert len(log.notices) == KEEP_NOTICES
    assert pending(log, log.epoch, 3) is None  # trimmed past position 3: the gateway must drop everything
    old = append(NoticeLog(epoch="e"), Notice(users=["bob"]), now=0.0)
    assert [n.seq for n in append(old, Notice(users=["carol"]), now=10_000.0).notices] == [2]  # aged out


class World:
    """Two caches loaded from dictionaries (the scheduler's answers), and a follower applying notices."""

    def __init__(self, dc: DevclusterHandle, key: str) -> None:
        self.routes_db: dict[tuple[str, str], str] = {("alice", "echo"): "v1", ("alice", "other"): "o1"}
        self.keys_db: dict[str, Identity] = {
            "cnk_alice": Identity(user_id="u1", username="alice"),
            "cnk_bob": Identity(user_id="u2", username="bob"),
        }
        self.routes: TTLCache[tuple[str, str], Any] = TTLCache(self._route, ttl=300, negative_ttl=300)
        self.identities: TTLCache[str, Identity] = TTLCache(self._ident, ttl=300, negative_ttl=300, alias=key_alias)
        self.resets: list[str] = []
        caches = GatewayCaches(self.routes, self.identities)
        self.consul = consul_aio(dc.consul_addr)
        self.follower = InvalidationFollower(
            self.consul.kv, key, caches.apply, lambda why: (self.resets.append(why), caches.reset(why)), wait="5s"
        )
        self.publisher = InvalidationPublisher(consul_aio(dc.consul_addr), key)
        self.scheduler_down = False

    async def _route(self, key: tuple[str, str]) -> Any:
        if self.scheduler_down:
            raise ConnectionError("scheduler down")
        return self.routes_db.get(key)

    async def _ident(self, key: str) -> Identity | None:
        if self.scheduler_down:
            raise ConnectionError("scheduler down")
        return self.keys_db.get(key)

    async def close(self) -> None:
        await self.follower.close()
        await self.publisher.close()
        await self.consul.close()
        await self.publisher.consul.close()


async def test_exactly_the_named_entries_go_within_one_blocking_round() -> None:
    with devcluster(nodes=(), local_node=True) as dc:
        world = World(dc, "test/invalidations")
        try:
            await world.publisher.publish(routes=[("nobody", "x")])  # a log exists before the gateway starts
            world.follower.start()
            await asyncio.wait_for(world.follower.synced.wait(), 5)
            assert world.resets == ["first answer from Consul"]

            assert await world.routes.get(("alice", "echo")) == "v1"
            assert await world.routes.get(("alice", "other")) == "o1"
            assert await world.routes.get(("alice", "new")) is None  # a negative entry, cached for 300 s
            assert (await world.identities.get("cnk_alice")) is not None
            assert (await world.identities.get("cnk_bob")) is not None

            # A share (or a redeploy) names its route: that entry goes, its neighbour stays.
            world.routes_db[("alice", "echo")] = "v2"
            assert await world.publisher.publish(routes=[("alice", "echo")])
            took = await _until(lambda: ("alice", "echo") not in world.routes, "the route dropped", 1.0)
            assert took < 1.0  # the blocking query returned at once, far below the 5 s wait
            assert ("alice", "other") in world.routes
            assert await world.routes.get(("alice", "echo")) == "v2"

            # A new chute drops the negative entry at once, not after its TTL.
            world.routes_db[("alice", "new")] = "n1"
            await world.publisher.publish(routes=[("alice", "new")])
            await _until(lambda: ("alice", "new") not in world.routes, "the negative entry dropped", 1.0)
            assert await world.routes.get(("alice", "new")) == "n1"

            # A revoked key: refused at once, and still refused while the scheduler is unreachable.
            del world.keys_db["cnk_alice"]
            await world.publisher.publish(keys=[key_alias("cnk_alice")])
            await _until(lambda: world.identities._entries["cnk_alice"].tombstone, "the key's tombstone", 1.0)
            world.scheduler_down = True
            assert await world.identities.get("cnk_alice") is None
            assert (await world.identities.get("cnk_bob")) is not None  # stale-if-error still covers the rest
            with pytest.raises(ConnectionError):  # an invalidated route is never served stale
                world.routes.invalidate(("alice", "other"))
                await world.routes.get(("alice", "other"))
            world.scheduler_down = False

            # A user's identities (a role change): every key of theirs goes.
            await world.publisher.publish(users=["bob"])
            await _until(lambda: "cnk_bob" not in world.identities, "bob's identities dropped", 1.0)
            assert world.resets == ["first answer from Consul"]  # no notice was missed so far
        finally:
            await world.close()


async def test_a_gateway_that_missed_notices_drops_everything() -> None:
    with devcluster(nodes=(), local_node=True) as dc:
        world = World(dc, "test/gap")
        try:
            world.follower.start()
            await asyncio.wait_for(world.follower.synced.wait(), 5)
            await world.publisher.publish(routes=[("x", "y")])  # the log is created after the gateway started
            await _until(lambda: world.follower.applied == 1, "the first notice applied")
            assert world.resets == ["first answer from Consul"]
            await world.routes.get(("alice", "echo"))
            await world.follower.close()  # the gateway loses Consul for a while ...
            for n in range(KEEP_NOTICES + 1):  # ... and more notices than the log keeps go by
                await world.publisher.publish(routes=[("someone", f"c{n}")])
            world.follower.start()
            await _until(lambda: len(world.resets) == 2, "a reset", 5.0)
            assert "notices missed" in world.resets[1]
            assert ("alice", "echo") not in world.routes
            # The key recreated from scratch (a new epoch) is a gap too.
            await world.publisher.consul.kv.delete("test/gap")
            await _until(lambda: len(world.resets) == 3, "a reset on removal", 5.0)
            await world.routes.get(("alice", "echo"))
            await world.publisher.publish(routes=[("alice", "other")])
            await _until(lambda: world.follower.applied == 1, "the new log followed", 5.0)
            assert ("alice", "echo") in world.routes  # read from its first notice: nothing to reset
        finally:
            await world.close()


async def test_an_explicit_consul_token_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with devcluster(nodes=(), local_node=True, consul_token="c-secret") as dc:
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", "wrong")
        client = consul_aio(dc.consul_addr, "c-secret")
        try:
            assert client.token == "c-secret"
            assert await client.kv.put("test/token", "ok")
        finally:
            await client.close()
        publisher = InvalidationPublisher(consul_aio(dc.consul_addr, "c-secret"), "test/token-log")
        try:
            assert await publisher.publish(routes=[("a", "b")]) is True
        finally:
            await publisher.close()
            await publisher.consul.close()
