"""The gateway's HTTP/1.1 client against a scripted raw-socket server on loopback (real sockets, real bytes)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from chutes.gateway.upstream import (
    BrokenAnswer,
    ConnectFailed,
    ConnectionPool,
    Disconnected,
    ReadTimeout,
)

pytestmark = pytest.mark.timeout(30)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """Accepts connections and runs ``script`` on each; counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return head + body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Awaitable[ScriptedServer]]]:
    servers: list[ScriptedServer] = []

    async def start(script: Script) -> ScriptedServer:
        srv = ScriptedServer(script)
        srv.server = await asyncio.start_server(srv._serve, "127.0.0.1", 0)
        srv.port = srv.server.sockets[0].getsockname()[1]
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        assert srv.server is not None
        srv.server.close()


def _request(body: bytes = b"{}") -> bytes:
    return b"POST /echo?x=1 HTTP/1.1\r\nhost: 127.0.0.1:1\r\nx-a: 1\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)


async def test_keep_alive_reuse_and_content_length(serve: Callable[[Script], Awaitable[ScriptedServer]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await srv.read_request(reader)
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello")
            await writer.drain()

    srv = await serve(script)
    pool = ConnectionPool(2, 5)
    for n in range(3):
        conn, reused = await pool.acquire("127.0.0.1", srv.port)
        assert reused == (n > 0)
        head = await conn.send(_request())
        assert (head.status, head.content_length) == (201, 5)
        assert (b"X-Y", b"z") in head.headers
        assert await conn.read_all() == b"hello"
        pool.release(conn)
    assert srv.connections == 1 and len(srv.requests) == 3
    assert srv.requests[0].endswith(b"content-length: 2\r\n\r\n{}")
    pool.close()


async def test_chunked_answer_arrives_chunk_by_chunk(serve: Callable[[Script], Awaitable[ScriptedServer]]) -> None:
    step = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await step.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    srv = await serve(script)
    pool = ConnectionPool(2, 5)
    conn, _ = await pool.acquire("127.0.0.1", srv.port)
    head = await conn.send(_request())
    assert head.content_length is None
    assert await conn.read() == b"first"  # before the server sent the rest
    step.set()
    assert await conn.read() == b"second"
    assert await conn.read() == b""
    assert conn.reusable
    pool.close()


async def test_answer_until_close(serve: Callable[[Script], Awaitable[ScriptedServer]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    srv = await serve(script)
    pool = ConnectionPool(2, 5)
    conn, _ = await pool.acquire("127.0.0.1", srv.port)
    await conn.send(_request())
    assert await conn.read_all() == b"all of it"
    assert not conn.reusable
    pool.release(conn)
    pool.close()


async def test_failures_are_typed_by_what_the_instance_saw(
    serve: Callable[[Script], Awaitable[ScriptedServer]],
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    pool = ConnectionPool(2, 5)
    with pytest.raises(ConnectFailed):
        await pool.acquire("127.0.0.1", dead_port)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)  # read it, answer nothing, close

    srv = await serve(hang_up)
    conn, _ = await pool.acquire("127.0.0.1", srv.port)
    with pytest.raises(Disconnected):
        await conn.send(_request())

    async def break_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv2.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    srv2 = await serve(break_off)
    conn, _ = await pool.acquire("127.0.0.1", srv2.port)
    head = await conn.send(_request())
    assert head.status == 200
    with pytest.raises(BrokenAnswer):
        await conn.read_all()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv3.read_request(reader)
        writer.write(b"this is not http\r\n\r\n")
        await writer.drain()
        await reader.read()

    srv3 = await serve(garbage)
    conn, _ = await pool.acquire("127.0.0.1", srv3.port)
    with pytest.raises(BrokenAnswer):
        await conn.send(_request())
    pool.close()


async def test_silence_past_the_read_timeout(serve: Callable[[Script], Awaitable[ScriptedServer]]) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        await asyncio.sleep(5)

    srv = await serve(silent)
    pool = ConnectionPool(2, read_timeout=0.3)
    conn, _ = await pool.acquire("127.0.0.1", srv.port)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ReadTimeout):
        await conn.send(_request())
    assert 0.25 < asyncio.get_running_loop().time() - started < 2
    pool.close()


async def test_idle_connections_expire_and_closed_ones_are_skipped(
    serve: Callable[[Script], Awaitable[ScriptedServer]],
) -> None:
    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)  # then close: a keep-alive connection the server drops

    srv = await serve(one_answer)
    pool = ConnectionPool(2, 5, idle_timeout=10)
    conn, _ = await pool.acquire("127.0.0.1", srv.port)
    await conn.send(_request())
    assert await conn.read_all() == b"ok"
    pool.release(conn)
    await asyncio.sleep(0.2)  # the server has closed it meanwhile
    again, reused = await pool.acquire("127.0.0.1", srv.port)
    assert not reused and again is not conn
    pool.close()


async def test_back_pressure_pauses_reading_a_big_answer(
    serve: Callable[[Script], Awaitable[ScriptedServer]],
) -> None:
    size = 4 * 1024 * 1024

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()

    srv = await serve(big)
    pool = ConnectionPool(2, 5)
    conn, _ = await pool.acquire("127.0.0.1", srv.port)
    await conn.send(_request())
    await asyncio.sleep(0.3)  # the reader is slow: the connection pauses instead of buffering it all
    assert conn._buffered <= 1024 * 1024
    total = 0
    while chunk := await conn.read():
        total += len(chunk)
    assert total == size
    pool.close()
