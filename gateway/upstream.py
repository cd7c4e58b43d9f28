"""A lean HTTP/1.1 client for calls to instances: pooled keep-alive connections, httptools parsing.

The gateway's hot path is one request and one answer per call to a known instance over loopback or a LAN.
A general client (redirects, cookies, proxies, auth, URL normalisation, timeouts objects per request) costs
more than everything else the gateway does, so this module does only what forwarding needs:

- one ``asyncio.Protocol`` per connection, its answer parsed by httptools (the parser uvicorn uses);
- idle connections kept per instance (LIFO, dropped after ``idle_timeout``, below the runtime's keep-alive);
- the answer's head awaited, then its body read chunk by chunk with back-pressure (reading pauses while the
  client is slower than the instance);
- failures typed by what the instance may have seen: ``ConnectFailed`` (nothing), ``Disconnected`` before
  any byte of an answer (retryable), ``BrokenAnswer`` after it (not), ``ReadTimeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httptools

_HIGH_WATER = 256 * 1024  # buffered answer bytes above which reading from the instance pauses


class UpstreamError(Exception):
    """A failed exchange with an instance."""


class ConnectFailed(UpstreamError):
    """The connection could not be made (refused, unreachable, timed out): the instance saw nothing."""


class Disconnected(UpstreamError):
    """The connection closed before any byte of an answer: the request may not have been processed."""


class BrokenAnswer(UpstreamError):
    """The answer started and then broke off, or was not valid HTTP."""


class ReadTimeout(UpstreamError):
    """The instance stayed silent for longer than the read timeout."""


@dataclass(slots=True)
class Head:
    """Status and headers of an answer (the reason phrase is not kept: the gateway writes its own)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    content_length: int | None


class Connection(asyncio.Protocol):
    """One connection to an instance; carries one exchange at a time."""

    def __init__(self, key: tuple[str, int], read_timeout: float, active: set[Connection]) -> None:
        self.key = key
        self.read_timeout = read_timeout
        self._active = active  # the pool's set of connections in an exchange, swept for silence
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._last_activity = 0.0
        # Told of every step of the exchange (data parsed, failure, close) while set: the gateway's synchronous
        # path answers a short answer from these callbacks, without a task or a future.
        self.listener: Callable[[Connection], None] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self._chunks: deque[bytes] = deque()
        self._reset()

    def _reset(self) -> None:
        """State of one exchange (the chunk queue is kept and emptied: one fewer allocation per call)."""
        self._headers: list[tuple[bytes, bytes]] = []
        self._length: int | None = None
        self._chunked = False
        self.head: Head | None = None  # the answer's head, once parsed
        self._head: asyncio.Future[Head] | None = None  # awaited by ``wait_head``
        self._busy = False  # a request was written and its answer is not complete
        self._chunks.clear()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: UpstreamError | None = None
        self._paused = False
        self._keep_alive = True
        self._until_close = False  # an answer with neither length nor chunking: it ends with the connection

    # --- asyncio.Protocol -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._last_activity = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BrokenAnswer(f"invalid HTTP from the instance: {exc}"))
            self.close()
        if self.listener is not None:
            self.listener(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._busy and self.head is None:
            self._fail(Disconnected(f"the instance closed the connection before answering ({exc or 'EOF'})"))
        elif self._busy and not self._complete:
            if self._until_close and exc is None:
                self._complete = True
                self._wake()
            else:
                self._fail(BrokenAnswer(f"the instance closed the connection mid-answer ({exc or 'EOF'})"))
        self._active.discard(self)
        if self.listener is not None:
            self.listener(self)

    def pause_writing(self) -> None:  # requests are small and written at once; nothing to throttle
        pass

    def resume_writing(self) -> None:
        pass

    # --- httptools callbacks ----------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        # The framing headers are noted as they come (by length first: most names are neither), not searched for.
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            if value.isdigit():  # llhttp refuses any other value; int() alone would take " 1" or "+1"
                self._length = int(value)
        elif size == 17 and name.lower() == b"transfer-encoding":
            self._chunked = value.lower().find(b"chunked") >= 0

    def on_headers_complete(self) -> None:
        parser = self._parser
        self._keep_alive = parser.should_keep_alive()
        status = parser.get_status_code()
        length = self._length
        self._until_close = length is None and not self._chunked and status not in (204, 304) and status >= 200
        head = self.head = Head(status, self._headers, length)
        waiter = self._head
        if waiter is not None and not waiter.done():
            waiter.set_result(head)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        if self._waiter is not None:  # a task reads the body (the callbacks' path has no waiter)
            self._wake()

    def on_message_complete(self) -> None:
        self._complete = True
        self._busy = False
        self._active.discard(self)
        if self._waiter is not None:
            self._wake()

    # --- the exchange -----------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: the caller may be gone
        self._wake()

    def check_silence(self, now: float) -> None:
        """Called by the pool's sweeper: fail the exchange when the instance has been silent too long."""
        if not self._complete and not self.closed and now - self._last_activity >= self.read_timeout:
            self._fail(ReadTimeout(f"no answer from the instance for {self.read_timeout:.0f}s"))
            self.close()
            if self.listener is not None:
                self.listener(self)

    def start(self, data: bytes) -> None:
        """Write one request (head and body in ``data``); its answer is parsed as it comes."""
        assert self.transport is not None
        self._reset()
        self._busy = True
        self._last_activity = self._loop.time()
        self._active.add(self)
        if self.closed:
            self._fail(Disconnected("the connection to the instance was closed"))
            return
        self.transport.write(data)

    async def wait_head(self) -> Head:
        """The head of the answer to the request ``start`` wrote (raises what failed before it)."""
        if self.head is not None:
            return self.head
        if self._error is not None:
            raise self._error
        self._head = self._loop.create_future()
        return await self._head

    async def send(self, data: bytes) -> Head:
        """Write one request (head and body in ``data``) and wait for the answer's head."""
        if self.closed:
            raise Disconnected("the connection to the instance was closed")
        self.start(data)
        return await self.wait_head()

    def take_body(self) -> bytes:
        """What has arrived of the body and was not taken yet (never waits); reading resumes if it was paused."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def has_body(self) -> bool:
        return bool(self._chunks)

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def error(self) -> UpstreamError | None:
        return self._error

    async def read(self) -> bytes:
        """The next piece of the answer's body; b"" once it is complete. Raises on a broken answer."""
        while True:
            if self._chunks:
                return self._pop()
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            if self.closed:  # an answer without length or chunking ends when the connection does
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def buffered(self) -> bytes:
        """The next piece of the body if it has already arrived, else b"" (never waits)."""
        return self._pop() if self._chunks else b""

    def _pop(self) -> bytes:
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= _HIGH_WATER // 4 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed and self._error is None

    def close(self) -> None:
        self._active.discard(self)
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True


class ConnectionPool:
    """Keep-alive connections per instance (host, port), reused most-recent first."""

    def __init__(self, connect_timeout: float, read_timeout: float, idle_timeout: float = 4.0) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self._idle: dict[tuple[str, int], list[Connection]] = {}
        self._active: set[Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def _sweep(self) -> None:
        """One timer for every exchange (instead of one per call): read timeouts to within a second."""
        loop = asyncio.get_running_loop()
        period = max(0.05, min(1.0, self.read_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in list(self._active):
                conn.check_silence(now)

    def idle(self, host: str, port: int) -> Connection | None:
        """A kept-alive connection to (host, port), if one is idle (never waits)."""
        idle = self._idle.get((host, port))
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self.idle_timeout:
                    return conn
                conn.close()
        return None

    async def acquire(self, host: str, port: int) -> tuple[Connection, bool]:
        """A connection to (host, port) and whether it was reused from the pool."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="upstream-read-timeouts")
        kept = self.idle(host, port)
        if kept is not None:
            return kept, True
        key = (host, port)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, conn = await loop.create_connection(
                    lambda: Connection(key, self.read_timeout, self._active), host, port
                )
        except TimeoutError:
            raise ConnectFailed(f"connecting to {host}:{port} timed out after {self.connect_timeout:.0f}s") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        conn.transport = transport  # connection_made may not have run yet under uvloop
        return conn, False

    def release(self, conn: Connection) -> None:
        """Return a connection after its exchange: kept if reusable, closed otherwise."""
        if not (conn._complete and conn._keep_alive and not conn.closed and conn._error is None):  # reusable
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)

    def forget(self, host: str, port: int) -> None:
        """Close the idle connections to an instance that went away."""
        for conn in self._idle.pop((host, port), []):
            conn.close()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        for conn in list(self._active):
            conn.close()
