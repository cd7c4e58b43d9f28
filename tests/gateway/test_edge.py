"""The gateway's edge: limits at its HTTP protocol and failed authentications throttled per client address.

Against a real instance and a scheduler double (which counts the key lookups the gateway makes). Latency
targets (a valid key under a wrong-key flood within 2x of idle, calls under 1,000 idle connections) are
measured side by side in ``benchmarks/edge.py``, not here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from chutes.core.edge.limits import EdgeLimits
from tests.gateway.conftest import Instances
from tests.gateway.support import (
    ALICE_KEY,
    SERVICE,
    SchedulerDouble,
    gateway_settings,
    register,
    running_gateway,
    wait_passing,
)
from tests.support.devcluster import DevclusterHandle
from tests.support.rawhttp import exchange

pytestmark = pytest.mark.timeout(90)

ALICE = {"Authorization": f"Bearer {ALICE_KEY}"}


async def _raw(url: str, data: bytes | list[bytes], wait: float = 5.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    return await exchange(host, int(port), data, wait)


async def test_oversized_headers_missing_host_and_encoded_slashes(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    inst = await instances.start()
    register(consul, inst)
    await wait_passing(consul, SERVICE, 1)
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        big = {"X-Padding": "a" * (20 * 1024), **ALICE}
        async with http.post(gw.chute_url("/echo"), json={"text": "x"}, headers=big) as resp:
            assert resp.status == 431
            assert "over 16384 bytes" in (await resp.json())["detail"]
        async with http.post(gw.chute_url("/echo"), json={"text": "ok"}, headers=ALICE) as resp:
            assert resp.status == 200  # a normal call right after
        # A header section that arrives in reads each under the limit, together over it: refused all the same.
        padding = [b"X-Pad-%d: %b\r\n" % (n, b"p" * 6000) for n in range(3)]
        split = await _raw(gw.url, [b"GET /healthz HTTP/1.1\r\nHost: gw\r\n", *padding, b"\r\n"])
        assert split.startswith(b"HTTP/1.1 431 ") and b"over 16384 bytes" in split, split[:200]
        no_host = await _raw(gw.url, b"POST /alice/gwtest/echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        assert no_host.startswith(b"HTTP/1.1 400 ") and b"no Host header" in no_host
        two = await _raw(gw.url, b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: alice-gwtest.chutes.test\r\n\r\n")
        assert two.startswith(b"HTTP/1.1 400 ") and b"more than one Host header" in two
        # '/alice%2Fgwtest/echo' is one segment, not alice's chute gwtest.
        async with http.post(f"{gw.url}/alice%2Fgwtest/echo", json={}, headers=ALICE) as resp:
            assert resp.status == 404 and "not a chute address" in (await resp.json())["detail"]


async def test_idle_connections_close_and_a_flood_of_them_does_not_stop_calls(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    inst = await instances.start()
    register(consul, inst)
    await wait_passing(consul, SERVICE, 1)
    limits = EdgeLimits(idle_timeout=0.5, header_timeout=0.5, max_connections=40)
    settings = gateway_settings(scheduler.url, dc.consul_addr, limits=limits)
    async with running_gateway(settings) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (await reader.read(65536)).startswith(b"HTTP/1.1 200 ")
        assert await asyncio.wait_for(reader.read(1), 5) == b""  # the idle keep-alive connection was closed
        writer.close()
        flood = [await asyncio.open_connection(host, int(port)) for _ in range(200)]  # 5x the cap, all silent
        async with aiohttp.ClientSession() as http:
            for i in range(10):
                async with http.post(gw.chute_url("/echo"), json={"text": str(i)}, headers=ALICE) as resp:
                    assert resp.status == 200, await resp.text()
        for _, w in flood:
            w.close()


async def test_a_wrong_key_flood_is_throttled_without_lookups_and_valid_keys_keep_working(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    inst = await instances.start()
    register(consul, inst)
    await wait_passing(consul, SERVICE, 1)
    settings = gateway_settings(scheduler.url, dc.consul_addr, auth_failure_burst=5, auth_failure_rate=0.5)
    async with running_gateway(settings) as gw, aiohttp.ClientSession() as http:
        async with http.post(gw.chute_url("/echo"), json={"text": "warm"}, headers=ALICE) as resp:
            assert resp.status == 200  # alice's key is known to this gateway
        lookups_before = scheduler.auth_calls
        statuses = []
        started = time.monotonic()
        for i in range(60):  # every one a different well-formed key: no cache could absorb them
            wrong = {"Authorization": f"Bearer cnk_{str(i).rjust(43, 'w')}"}
            async with http.post(gw.chute_url("/echo"), json={}, headers=wrong) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert int(resp.headers["Retry-After"]) >= 1
                    assert "failed authentications" in (await resp.json())["detail"]
        took = time.monotonic() - started
        # The burst, then one more lookup per 2 s: every other wrong key is refused before any lookup.
        assert statuses[:5] == [401] * 5 and statuses[5] == 429
        assert statuses.count(401) <= 5 + int(took * 0.5) + 1 and statuses.count(429) >= 60 - 5 - int(took * 0.5) - 1
        assert scheduler.auth_calls - lookups_before == statuses.count(401)  # a 429 costs the scheduler nothing
        # From the same address, a key the gateway has seen accepted still works at once.
        async with http.post(gw.chute_url("/echo"), json={"text": "still"}, headers=ALICE) as resp:
            assert resp.status == 200, await resp.text()


async def test_pipelined_calls_are_answered_in_order_and_each_limit_answers_at_the_gateways_own_server(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    inst = await instances.start()
    register(consul, inst)
    await wait_passing(consul, SERVICE, 1)
    limits = EdgeLimits(header_timeout=0.5, body_timeout=0.5, max_headers=20, max_request_line=1024)
    settings = gateway_settings(scheduler.url, dc.consul_addr, limits=limits, max_body_bytes=1000)
    auth = f"Authorization: Bearer {ALICE_KEY}\r\n".encode()

    def echo(text: str) -> bytes:
        body = b'{"text": "%s"}' % text.encode()
        return b"POST /alice/gwtest/echo HTTP/1.1\r\nHost: gw\r\n%bContent-Length: %d\r\n\r\n%b" % (
            auth,
            len(body),
            body,
        )

    async with running_gateway(settings) as gw:
        # Three requests in one write, the last one closing: three answers, in order, then the close.
        health = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
        closing = echo("third").replace(b"Host: gw\r\n", b"Host: gw\r\nConnection: close\r\n")
        out = await _raw(gw.url, health + echo("second") + closing)
        assert out.count(b"HTTP/1.1 200 ") == 3, out
        assert out.index(b'"status"') < out.index(b'"second"') < out.index(b'"third"')
        assert b"connection: close" in out.lower()
        assert out.count(b"date: ") == 3  # the gateway's own Date (the instance's is not passed on)

        too_long = await _raw(gw.url, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert too_long.startswith(b"HTTP/1.1 414 "), too_long
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
        too_many = await _raw(gw.url, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n" + many + b"\r\n")
        assert too_many.startswith(b"HTTP/1.1 431 ") and b"more than 20 header fields" in too_many
        big = b"x" * 5000
        over = b"POST /alice/gwtest/echo HTTP/1.1\r\nHost: gw\r\n%bContent-Length: %d\r\n\r\n" % (auth, len(big))
        refused = await _raw(gw.url, over + big[:3000])  # the gateway answers before the rest arrives
        assert refused.startswith(b"HTTP/1.1 413 ") and b"request body over 1000 bytes" in refused
        slow_head = await _raw(gw.url, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
        assert slow_head.startswith(b"HTTP/1.1 408 ") and b"headers not complete" in slow_head
        slow_body = await _raw(
            gw.url, b"POST /alice/gwtest/echo HTTP/1.1\r\nHost: gw\r\n%bContent-Length: 10\r\n\r\n{" % auth
        )
        assert slow_body.startswith(b"HTTP/1.1 408 ") and b"request body" in slow_body


async def test_expect_100_continue_is_answered_before_the_body_is_sent(
    dc: DevclusterHandle, consul: Any, scheduler: SchedulerDouble, instances: Instances
) -> None:
    inst = await instances.start()
    register(consul, inst)
    await wait_passing(consul, SERVICE, 1)
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            body = b'{"text": "after continue"}'
            writer.write(
                b"POST /alice/gwtest/echo HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %b\r\n"
                b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (ALICE_KEY.encode(), len(body))
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(body)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert b"after continue" in await reader.readexactly(length)
        finally:
            writer.close()
