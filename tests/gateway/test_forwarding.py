"""What exactly crosses the gateway: signatures, headers, bodies, retries on 429, streams that break.

The instances here are small recording HTTP servers (registered in the devcluster's Consul like real ones)
that verify the gateway's signature with ``chutes.core.signing`` and report what they received, so that the
assertions can look at the bytes on both sides.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from chutes.core.signing import SignatureError, verify
from tests.gateway.support import (
    ALICE_KEY,
    SECRET,
    SERVICE,
    SchedulerDouble,
    gateway_settings,
    running_gateway,
    wait_passing,
)
from tests.support.devcluster import DevclusterHandle

pytestmark = pytest.mark.timeout(60)

ALICE = {"Authorization": f"Bearer {ALICE_KEY}"}


@dataclass
class Recorder:
    """An instance that checks signatures and answers according to ``mode``."""

    mode: str = "echo"
    seen: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/_ready":
            return web.Response(text="ok")
        body = await request.read()
        try:
            verify(SECRET, request.headers.get("X-Chutes-Signature"), request.method, request.raw_path, body)
        except SignatureError as exc:
            return web.json_response({"detail": str(exc)}, status=exc.status)
        self.seen.append({"headers": dict(request.headers), "target": request.raw_path, "body": body})
        if self.mode == "busy":
            return web.json_response({"detail": "full"}, status=429, headers={"Retry-After": "1"})
        if self.mode == "gzip":
            data = gzip.compress(b'{"compressed": true}')
            return web.Response(body=data, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        if self.mode in ("stream", "break"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(3):
                await resp.write(f"data: {i}\n\n".encode())
                await asyncio.sleep(0.05)
            if self.mode == "break":
                assert request.transport is not None
                request.transport.abort()  # the instance dies mid-answer
                return resp
            await resp.write_eof()
            return resp
        headers = [
            ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"), ("X-From-Instance", "yes"),
        ]  # fmt: skip
        answer = {"target": request.raw_path, "body": body.decode(), "headers": dict(request.headers)}
        resp = web.json_response(answer)
        for name, value in headers:
            resp.headers.add(name, value)
        return resp

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def recorders(consul: Any) -> AsyncIterator[list[Recorder]]:
    import consul as consul_lib

    pair = [Recorder(), Recorder()]
    for n, rec in enumerate(pair):
        await rec.start()
        check = consul_lib.Check.http(f"http://127.0.0.1:{rec.port}/_ready", interval="200ms", timeout="1s")
        consul.agent.service.register(SERVICE, service_id=f"rec-{n}", address="127.0.0.1", port=rec.port, check=check)
    await wait_passing(consul, SERVICE, 2)
    yield pair
    for rec in pair:
        await rec.close()


async def test_signed_sanitised_and_passed_through(
    dc: DevclusterHandle, recorders: list[Recorder], scheduler: SchedulerDouble
) -> None:
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        headers = {
            **ALICE,
            "X-Chutes-Signature": "t=1,v1=" + "0" * 64,  # a client cannot choose the instance's signature
            "X-Forwarded-For": "203.0.113.9",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "drop me",
            "X-Custom": "kept",
            "Content-Type": "application/json",
        }
        raw = b'{"text": "exact bytes",   "n": 1}'
        async with http.post(gw.chute_url("/echo?b=2&a=%20x"), data=raw, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
            assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]
            assert resp.headers["X-From-Instance"] == "yes"
            assert "X-Secret-Hop" not in resp.headers
            invocation_id = resp.headers["X-Chutes-Invocation-Id"]
    got = {k.lower(): v for k, v in answer["headers"].items()}
    assert answer["target"] == "/echo?b=2&a=%20x"  # the signed target is the path plus the raw query
    assert answer["body"] == raw.decode()
    assert "authorization" not in got and "x-hop" not in got
    assert got["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert got["x-chutes-invocation-id"] == invocation_id
    assert got["x-custom"] == "kept" and got["content-type"] == "application/json"
    assert got["x-chutes-signature"] != headers["X-Chutes-Signature"]


async def test_a_full_instance_is_skipped_and_all_full_is_429(
    dc: DevclusterHandle, recorders: list[Recorder], scheduler: SchedulerDouble
) -> None:
    recorders[0].mode = "busy"
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        for n in range(6):
            async with http.post(gw.chute_url("/echo"), json={"n": n}, headers=ALICE) as resp:
                assert resp.status == 200  # whichever instance was drawn first, the call ends on the free one
        recorders[1].mode = "busy"
        async with http.post(gw.chute_url("/echo"), json={"n": 99}, headers=ALICE) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "1"
            assert resp.headers["X-Chutes-Invocation-Id"]
    assert len(recorders[1].seen) >= 6


async def test_compressed_answers_pass_through_untouched(
    dc: DevclusterHandle, recorders: list[Recorder], scheduler: SchedulerDouble
) -> None:
    for rec in recorders:
        rec.mode = "gzip"
    settings = gateway_settings(scheduler.url, dc.consul_addr)
    async with running_gateway(settings) as gw, aiohttp.ClientSession(auto_decompress=False) as http:
        headers = {**ALICE, "Accept-Encoding": "gzip"}
        async with http.post(gw.chute_url("/echo"), json={}, headers=headers) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            assert json.loads(gzip.decompress(await resp.read())) == {"compressed": True}


async def test_streams_pass_through_and_a_broken_one_is_cut_not_ended(
    dc: DevclusterHandle, recorders: list[Recorder], scheduler: SchedulerDouble
) -> None:
    for rec in recorders:
        rec.mode = "stream"
    async with running_gateway(gateway_settings(scheduler.url, dc.consul_addr)) as gw, aiohttp.ClientSession() as http:
        async with http.post(gw.chute_url("/stream"), json={}, headers=ALICE) as resp:
            assert resp.status == 200
            assert await resp.text() == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
        for rec in recorders:
            rec.mode = "break"
        async with http.post(gw.chute_url("/stream"), json={}, headers=ALICE) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        errors = gw.gateway.metrics.registry.get_sample_value(
            "chutes_gateway_upstream_errors_total", {"chute": "alice/gwtest", "kind": "stream"}
        )
    assert errors == 1
