"""The edge protocol on a real uvicorn server (loopback, port 0): every limit, its answer, its log line.

The application behind it echoes the path it was given (and holds a request while ``/hold`` is called), so
each test can tell what reached it and what the protocol answered on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from chutes.core.edge.limits import EdgeLimits
from chutes.core.edge.protocol import EdgeGuard, decode_path
from tests.support.rawhttp import exchange

pytestmark = pytest.mark.timeout(60)

FAST = EdgeLimits(
    max_header_bytes=4096, max_headers=20, max_request_line=1024, header_timeout=0.6, idle_timeout=0.6,
    body_timeout=0.6, max_connections=50,
)  # fmt: skip


@dataclass
class Served:
    guard: EdgeGuard
    port: int
    release: asyncio.Event
    held: list[str]

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def exchange(self, raw: bytes, wait: float = 5.0) -> bytes:
        """Send ``raw`` on a new connection; everything answered until the server closes it (or ``wait``)."""
        return await exchange("127.0.0.1", self.port, raw, wait)

    async def get(self, path: str = "/echo", wait: float = 5.0) -> bytes:
        return await self.exchange(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(), wait)


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def body(answer: bytes) -> Any:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


@contextlib.asynccontextmanager
async def serve(limits: EdgeLimits = FAST) -> AsyncIterator[Served]:
    release = asyncio.Event()
    held: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/hold":
            held.append(scope["path"])
            await release.wait()
        payload = json.dumps({"path": scope["path"], "raw_path": scope["raw_path"].decode()}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    guard = EdgeGuard(limits, "test")
    server = uvicorn.Server(uvicorn.Config(app, http=guard.protocol(), lifespan="off", log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield Served(guard, sock.getsockname()[1], release, held)
    finally:
        release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def test_a_request_within_the_limits_is_served_and_keeps_encoded_slashes() -> None:
    async with serve() as s:
        answer = await s.get("/a%2Fb%2fc%20d")
    assert status(answer) == 200
    # %2F stays a character of the segment; the other escapes are decoded as usual.
    assert body(answer) == {"path": "/a%2Fb%2Fc d", "raw_path": "/a%2Fb%2fc%20d"}


def test_decode_path() -> None:
    assert decode_path(b"/x%2Fy/%41") == "/x%2Fy/A"
    assert decode_path(b"/plain") == "/plain"


async def test_oversized_headers_are_431_before_the_server_buffers_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "chutes.core.edge")
    async with serve() as s:
        one_big = await s.exchange(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        fields = b"".join(b"X-%d: 1\r\n" % i for i in range(30))
        many = await s.exchange(b"GET / HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
        # A header that never ends: the answer comes while the client is still sending, long before 8 MiB.
        reader, writer = await s.open()
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Huge: ")
        sent = 0
        answer = b""
        with contextlib.suppress(ConnectionError):
            while sent < 8 * 2**20 and not answer:
                writer.write(b"a" * 65536)
                await writer.drain()
                sent += 65536
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(reader.read(65536), 0.01)
        if not answer:
            answer = await reader.read(65536)
        writer.close()
        counts = dict(s.guard.counts)
    assert status(one_big) == 431 and "over 4096 bytes" in body(one_big)["detail"]
    assert status(many) == 431 and "more than 20 header fields" in body(many)["detail"]
    assert status(answer) == 431
    assert sent < 2**20, f"the server let {sent} bytes of one header in before refusing"
    assert counts["header_bytes"] >= 2 and counts["header_count"] == 1
    assert any("(431)" in r.getMessage() and "client 127.0.0.1" in r.getMessage() for r in caplog.records)


async def test_a_huge_header_pipelined_behind_a_busy_request_is_refused_too() -> None:
    async with serve() as s:
        reader, writer = await s.open()
        writer.write(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\nX-Huge: ")
        while not s.held:
            await asyncio.sleep(0.01)
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < 4 * 2**20:
                writer.write(b"a" * 65536)
                await writer.drain()
                sent += 65536
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(65536), 0.01) == b"":
                        break
        writer.close()
        refused = s.guard.counts["header_bytes"]
    # The head buffered behind /hold (still running) was counted, and the connection cut, within the limit.
    assert refused == 1
    assert sent < 2**20, f"{sent} bytes of one pipelined header were taken in"


async def test_long_request_line_host_rules() -> None:
    async with serve() as s:
        long_target = await s.get("/" + "x" * 2000)
        no_host = await s.exchange(b"GET / HTTP/1.1\r\n\r\n")
        two_hosts = await s.exchange(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        http10 = await s.exchange(b"GET /old HTTP/1.0\r\n\r\n")
        garbage = await s.exchange(b"NOT HTTP AT ALL\r\n\r\n")
    assert status(long_target) == 414
    assert status(no_host) == 400 and body(no_host)["detail"] == "no Host header"
    assert status(two_hosts) == 400 and body(two_hosts)["detail"] == "more than one Host header"
    assert status(http10) == 200  # HTTP/1.0 has no Host header to require
    assert status(garbage) == 400 and body(garbage)["detail"].startswith("invalid HTTP request")


async def test_idle_keep_alive_connections_close_after_the_idle_timeout() -> None:
    async with serve() as s:
        reader, writer = await s.open()
        writer.write(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n")
        first = await reader.read(65536)
        assert status(first) == 200
        idle_since = time.monotonic()
        with pytest.raises(TimeoutError):  # still open half-way through the timeout
            await asyncio.wait_for(reader.read(1), FAST.idle_timeout / 2)
        assert await asyncio.wait_for(reader.read(1), 5) == b""  # then closed by the server
        closed_after = time.monotonic() - idle_since
        writer.close()
        assert s.guard.counts["idle_closed"] == 1
    assert FAST.idle_timeout <= closed_after < FAST.idle_timeout + 1.5


async def test_slow_headers_and_a_stalled_body_get_408() -> None:
    async with serve() as s:
        started = time.monotonic()
        slow_head = await s.exchange(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: 1", wait=5)
        head_took = time.monotonic() - started
        stalled = await s.exchange(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly a part", wait=5)
        silent = await s.exchange(b"", wait=5)  # connects and never sends: closed without an answer
        counts = dict(s.guard.counts)
    assert status(slow_head) == 408 and "headers not complete" in body(slow_head)["detail"]
    assert FAST.header_timeout <= head_took < FAST.header_timeout + 1.5
    assert status(stalled) == 408 and "request body" in body(stalled)["detail"]
    assert silent == b""
    assert counts["header_timeout"] == 2 and counts["body_timeout"] == 1


async def test_a_flood_of_idle_connections_does_not_stop_valid_calls() -> None:
    async with serve() as s:
        flood = [await s.open() for _ in range(3 * FAST.max_connections)]
        await asyncio.sleep(0.05)
        assert len(s.guard.open) <= FAST.max_connections
        answers = [await s.get(f"/valid-{i}") for i in range(10)]
        assert all(status(a) == 200 for a in answers)
        assert s.guard.counts["evicted"] >= 2 * FAST.max_connections
        for _, writer in flood:
            writer.close()


async def test_when_every_connection_is_busy_a_new_one_gets_503_at_once() -> None:
    limits = FAST.replace(max_connections=3, header_timeout=30, idle_timeout=30)
    async with serve(limits) as s:
        holders = [await s.open() for _ in range(3)]
        for _, writer in holders:
            writer.write(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
        while len(s.held) < 3:
            await asyncio.sleep(0.01)
        refused = await s.get("/more", wait=2)
        s.release.set()
        for reader, writer in holders:
            assert status(await reader.read(65536)) == 200  # the busy ones were never cut
            writer.close()
    assert status(refused) == 503 and "limit of 3 open connections" in body(refused)["detail"]
    assert b"retry-after: 1" in refused


def test_limits_come_from_flags_and_environment_and_are_checked() -> None:
    import argparse

    from chutes.core.edge import limits as edge_limits

    parser = argparse.ArgumentParser()
    edge_limits.add_arguments(parser)
    env = {"CHUTES_MAX_HEADER_BYTES": "32768", "CHUTES_IDLE_TIMEOUT": "5"}
    got = edge_limits.from_args(parser.parse_args(["--idle-timeout", "9", "--max-connections", "10"]), env)
    assert (got.max_header_bytes, got.idle_timeout, got.max_connections) == (32768, 9.0, 10)
    with pytest.raises(edge_limits.LimitsError, match="CHUTES_MAX_HEADERS"):
        edge_limits.from_env({"CHUTES_MAX_HEADERS": "many"})
    with pytest.raises(edge_limits.LimitsError, match="--header-timeout"):
        edge_limits.from_env({"CHUTES_HEADER_TIMEOUT": "-1"})
