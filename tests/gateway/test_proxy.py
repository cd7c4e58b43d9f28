"""The gateway against real runtime instances registered in the devcluster's Consul.

Covers issue 7's must-show list on the gateway's side (the scheduler is a double here; tests/e2e has the
full stack): no failed call while an instance dies, scale from zero, concurrency=1 refusals, streaming
frame by frame, 401 and 404; plus discovery, retries, metering and metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp
import pytest

from tests.gateway.conftest import Instances
from tests.gateway.support import (
    ALICE_KEY,
    BOB_KEY,
    CAROL_KEY,
    CHUTE_ID,
    SERVICE,
    SchedulerDouble,
    gateway_settings,
    register,
    route_info,
    running_gateway,
    wait_passing,
)
from tests.support.devcluster import DevclusterHandle

pytestmark = pytest.mark.timeout(90)

ALICE = {"Authorization": f"Bearer {ALICE_KEY}"}
BOB = {"Authorization": f"Bearer {BOB_KEY}"}


async def test_echo_through_the_gateway(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    inst = await instances.start()
    register(consul, inst)
    await wait_passing(consul, SERVICE, 1)
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        async with http.post(gw.chute_url("/echo"), json={"text": "hi"}, headers=ALICE) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body["text"] == "hi" and body["pid"] == inst.proc.pid
            assert len(resp.headers["X-Chutes-Invocation-Id"]) == 32
            assert "X-Chutes-Conn-Used" in resp.headers
        # identical calls within one second sign differently (the runtime refuses a replayed signature)
        for _ in range(10):
            async with http.post(gw.chute_url("/echo"), json={"text": "same"}, headers=ALICE) as resp:
                assert resp.status == 200, await resp.text()
        # the host address names the same chute
        host = {"Host": "alice-gwtest.chutes.test", **ALICE}
        async with http.post(f"{gw.url}/echo", json={"text": "by host"}, headers=host) as resp:
            assert resp.status == 200 and (await resp.json())["text"] == "by host"


async def _call(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, Any]:
    async with http.post(url, json=body, headers=headers) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def test_unauthenticated_401_and_other_users_private_chute_404(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    scheduler.routes[("alice", "shared")] = {**route_info(shared_with=["bob"]), "slug": "shared"}
    scheduler.routes[("alice", "pub")] = {**route_info(public=True), "slug": "pub"}
    inst = await instances.start()
    register(consul, inst)
    await wait_passing(consul, SERVICE, 1)
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        url = gw.chute_url("/echo")
        async with http.post(url, json={}) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            assert resp.headers["X-Chutes-Invocation-Id"]
            assert (await resp.json())["detail"] == "missing or invalid API key"
        assert (await _call(http, url, {}, {"Authorization": "Bearer cnk_" + "n" * 43}))[0] == 401
        assert (await _call(http, url, {}, {"Authorization": "Bearer"}))[0] == 401
        assert (await _call(http, url, {}, {"Authorization": "Bearer cnk_short"}))[0] == 401  # not a key's shape
        status, private = await _call(http, url, {}, BOB)
        status_missing, missing = await _call(http, gw.chute_url("/echo", slug="nothing"), {}, BOB)
        assert (status, status_missing) == (404, 404)
        assert private == missing  # another user's private chute looks exactly like no chute
        assert (await _call(http, gw.chute_url("/echo", slug="shared"), {"n": 1}, BOB))[0] == 200
        assert (await _call(http, gw.chute_url("/echo", slug="pub"), {"n": 2}, {"Authorization": CAROL_KEY}))[0] == 200
        status, body = await _call(http, gw.chute_url("/nope"), {}, ALICE)
        assert status == 404 and "POST /echo" in body["hint"]
        async with http.get(gw.chute_url("/echo"), headers=ALICE) as resp:
            assert resp.status == 404  # the cord is POST
        for n in range(5):
            assert (await _call(http, url, {"n": 10 + n}, ALICE))[0] == 200
    assert scheduler.auth_calls == 4  # nobody, alice, bob and carol: each key looked up once (cached); no
    # lookup for keys without the key format


async def test_no_failed_call_when_one_of_two_instances_is_killed(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    first, second = await instances.start(), await instances.start()
    register(consul, first)
    register(consul, second)
    await wait_passing(consul, SERVICE, 2)
    results: list[tuple[int, Any]] = []
    counter = iter(range(1_000_000))
    stop = asyncio.Event()

    async def caller(http: aiohttp.ClientSession, url: str) -> None:
        while not stop.is_set():
            results.append(await _call(http, url, {"seconds": 0.05, "n": next(counter)}, ALICE))

    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        workers = [asyncio.create_task(caller(http, gw.chute_url("/sleep"))) for _ in range(6)]
        await asyncio.sleep(1.0)
        before = len(results)
        first.kill()  # SIGKILL: calls in flight on it lose their connection
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*workers)
        retries = gw.gateway.metrics.registry.get_sample_value(
            "chutes_gateway_retries_total", {"chute": "alice/gwtest", "reason": "unreachable"}
        )
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:5]
    pids = [body["pid"] for _, body in results]
    assert first.proc.pid in pids[:before] and second.proc.pid in pids[:before]  # both served before the kill
    assert pids[-1] == second.proc.pid
    assert len(results) - before > 20  # the stream went on after the kill
    assert retries and retries >= 1


async def test_a_chute_at_zero_instances_answers_its_first_call(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    async def wake(chute_id: str) -> None:
        assert chute_id == CHUTE_ID
        register(consul, await instances.start())

    scheduler.on_wake = wake
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        started = time.monotonic()
        calls = [_call(http, gw.chute_url("/echo"), {"n": n}, ALICE) for n in range(3)]
        results = await asyncio.gather(*calls)
        waited = time.monotonic() - started
        held = gw.gateway.metrics.registry.get_sample_value(
            "chutes_gateway_held_total", {"chute": "alice/gwtest", "outcome": "served"}
        )
    assert [status for status, _ in results] == [200, 200, 200], results
    assert scheduler.wakes and set(scheduler.wakes) == {CHUTE_ID}
    assert held == 3
    assert waited < 15


async def test_the_scheduler_hears_held_calls_then_calls_in_flight_per_instance(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    """The utilisation reports that the gateway sends with its invocation batches (what the autoscaler reads)."""

    def latest() -> dict[str, Any]:
        return dict(scheduler.reports[-1]["chutes"].get(CHUTE_ID) or {}) if scheduler.reports else {}

    async def until(predicate: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while not predicate(latest()):
            assert time.monotonic() < deadline, (what, scheduler.reports[-3:])
            await asyncio.sleep(0.05)
        return latest()

    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        held = [asyncio.create_task(_call(http, gw.chute_url("/echo"), {"n": n}, ALICE)) for n in range(2)]
        report = await until(lambda c: c.get("held") == 2, "two calls held at zero instances")
        assert report["instances"] == {}
        inst = await instances.start()
        service_id = register(consul, inst)
        assert [status for status, _ in await asyncio.gather(*held)] == [200, 200]
        slow = asyncio.create_task(_call(http, gw.chute_url("/sleep"), {"seconds": 2}, ALICE))
        report = await until(lambda c: c.get("instances", {}).get(service_id) == {"in_flight": 1}, "one in flight")
        assert report["held"] == 0
        assert (await slow)[0] == 200
        report = await until(lambda c: c["instances"][service_id] == {"in_flight": 0}, "none in flight")
        assert report["last_call_at"] > 0
    completed = sum(r["chutes"].get(CHUTE_ID, {}).get("completed", 0) for r in scheduler.reports)
    assert completed == len(scheduler.invocations) == 3
    assert {r["gateway_id"] for r in scheduler.reports} == {scheduler.reports[0]["gateway_id"]}


async def test_held_calls_give_up_with_503_and_retry_after(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble
) -> None:
    settings = gateway_settings(scheduler.url, dc.consul_addr, hold_timeout=1.0, hold_queue=2)
    async with running_gateway(settings) as gw, aiohttp.ClientSession() as http:
        started = time.monotonic()
        tasks = [asyncio.create_task(http.post(gw.chute_url("/echo"), json={"n": n}, headers=ALICE)) for n in range(3)]
        responses = await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        statuses = sorted(r.status for r in responses)
        assert statuses == [503, 503, 503]
        assert all(r.headers["Retry-After"] == "2" for r in responses)
        outcomes = {
            o: gw.gateway.metrics.registry.get_sample_value(
                "chutes_gateway_held_total", {"chute": "alice/gwtest", "outcome": o}
            )
            for o in ("timeout", "queue_full")
        }
        for r in responses:
            r.release()
    assert outcomes == {"timeout": 2, "queue_full": 1}  # the third call found the queue full
    assert 1.0 <= elapsed < 5
    assert scheduler.wakes.count(CHUTE_ID) >= 1


async def test_concurrency_one_two_instances_serve_two_and_refuse_the_third(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    scheduler.routes[("alice", "gwtest")] = route_info(concurrency=1)
    a, b = await instances.start(concurrency=1), await instances.start(concurrency=1)
    register(consul, a)
    register(consul, b)
    await wait_passing(consul, SERVICE, 2)
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        url = gw.chute_url("/sleep")
        assert (await _call(http, url, {"seconds": 0, "n": 0}, ALICE))[0] == 200  # tables loaded
        slow = [asyncio.create_task(_call(http, url, {"seconds": 1.5, "n": n}, ALICE)) for n in (1, 2)]
        await asyncio.sleep(0.5)
        async with http.post(url, json={"seconds": 0, "n": 3}, headers=ALICE) as third:
            assert third.status == 429
            assert third.headers["Retry-After"] == "1"
            assert "capacity" in (await third.json())["detail"]
        both = await asyncio.gather(*slow)
        assert [s for s, _ in both] == [200, 200]
        assert {body["pid"] for _, body in both} == {a.proc.pid, b.proc.pid}  # one call on each instance
        assert (await _call(http, url, {"seconds": 0, "n": 4}, ALICE))[0] == 200  # free again


async def test_a_streaming_cord_streams_frame_by_frame(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    register(consul, await instances.start())
    await wait_passing(consul, SERVICE, 1)
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        # The first call is served by a task; the second finds a kept-alive connection and is relayed from the
        # connections' callbacks: both stream frame by frame.
        for _ in range(2):
            started = time.monotonic()
            arrivals: list[tuple[float, str]] = []
            async with http.post(gw.chute_url("/stream"), json={"frames": 5, "delay": 0.4}, headers=ALICE) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                assert resp.headers["X-Chutes-Invocation-Id"]
                async for raw in resp.content:
                    line = raw.decode().strip()
                    if line.startswith("data:"):
                        arrivals.append((time.monotonic() - started, line))
            total = time.monotonic() - started
            assert [json.loads(line[5:])["i"] for _, line in arrivals] == [0, 1, 2, 3, 4]
            assert arrivals[0][0] < total - 1.2  # the first frame arrived long before the stream ended
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
            assert all(gap > 0.2 for gap in gaps), gaps  # each frame arrived on its own, as it was produced


async def test_health_changes_reach_the_table_within_a_second(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    first, second = await instances.start(), await instances.start()
    register(consul, first)
    await wait_passing(consul, SERVICE, 1)
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        assert (await _call(http, gw.chute_url("/echo"), {"n": 0}, ALICE))[0] == 200
        watch = gw.gateway.discovery.watches[SERVICE]

        async def seen_within(count: int, limit: float) -> float:
            started = time.monotonic()
            while len(watch.upstreams) != count:
                assert time.monotonic() - started < limit, f"table still has {len(watch.upstreams)} instances"
                await asyncio.sleep(0.01)
            return time.monotonic() - started

        register(consul, second)  # new instance: passing after its first check (interval 200 ms)
        assert await seen_within(2, 1.5) < 1.5
        consul.agent.service.deregister(first.service_id)
        assert await seen_within(1, 1.0) < 1.0
        assert watch.upstreams[0].port == second.port
        second.kill()  # its check turns critical within an interval
        assert await seen_within(0, 1.5) < 1.5


async def test_metering_records_and_metrics(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    register(consul, await instances.start())
    await wait_passing(consul, SERVICE, 1)
    settings = gateway_settings(scheduler.url, dc.consul_addr, max_body_bytes=2000)
    async with running_gateway(settings) as gw, aiohttp.ClientSession() as http:
        for n in range(3):
            assert (await _call(http, gw.chute_url("/echo"), {"text": "x" * 10, "n": n}, ALICE))[0] == 200
        status, body = await _call(http, gw.chute_url("/echo"), {"text": "x" * 5000}, ALICE)
        assert status == 413 and "detail" in body
        deadline = time.monotonic() + 5
        while len(scheduler.invocations) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        async with http.get(f"{gw.url}/metrics") as resp:
            metrics = await resp.text()
        async with http.get(f"{gw.url}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
    records = sorted(scheduler.invocations, key=lambda r: r["started_at"])
    assert [r["status"] for r in records] == [200, 200, 200, 413]
    ok = records[0]
    assert ok["chute_id"] == CHUTE_ID and ok["caller"] == "u-alice" and ok["cord"] == "echo"
    assert ok["bytes_in"] == len(json.dumps({"text": "x" * 10, "n": 0})) and ok["bytes_out"] > 0
    assert ok["duration_ms"] > 0 and abs(ok["started_at"] - time.time()) < 60
    assert len({r["invocation_id"] for r in records}) == 4
    assert 'chutes_gateway_requests_total{chute="alice/gwtest",cord="echo",status="200"} 3.0' in metrics
    assert 'chutes_gateway_requests_total{chute="alice/gwtest",cord="echo",status="413"} 1.0' in metrics
    assert "chutes_gateway_request_duration_seconds_bucket" in metrics


async def test_idle_watches_stop_and_a_down_scheduler_is_covered_by_the_cache(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    register(consul, await instances.start())
    await wait_passing(consul, SERVICE, 1)
    settings = gateway_settings(scheduler.url, dc.consul_addr, watch_idle=1.0, auth_ttl=0.2, route_ttl=0.2)
    async with running_gateway(settings) as gw, aiohttp.ClientSession() as http:
        assert (await _call(http, gw.chute_url("/echo"), {"n": 1}, ALICE))[0] == 200
        assert SERVICE in gw.gateway.discovery.watches
        scheduler.down = True
        await asyncio.sleep(0.5)  # past both TTLs: the cached key and route are served stale
        assert (await _call(http, gw.chute_url("/echo"), {"n": 2}, ALICE))[0] == 200
        status, body = await _call(http, gw.chute_url("/echo"), {"n": 3}, BOB)  # never seen: cannot be checked
        assert status == 503 and "control plane" in body["detail"]
        deadline = time.monotonic() + 4
        while SERVICE in gw.gateway.discovery.watches:
            assert time.monotonic() < deadline, "the idle watch was not stopped"
            await asyncio.sleep(0.1)
        scheduler.down = False
        assert (await _call(http, gw.chute_url("/echo"), {"n": 4}, ALICE))[0] == 200  # watch restarted
