"""The gateway's HTTP/1.1 server: one asyncio protocol per client connection, httptools as the parser.

No ASGI layer between the parser and the proxy: a request is an ``Incoming`` built once when its headers are
complete, its body is collected by the parser callbacks, and the answer is written straight to the transport
(a known length in one write, a stream as chunks, each relayed as it comes: nothing is coalesced). A complete
request is first offered to the server's ``fast`` handler, which serves an ordinary call from the callbacks
without a task (``Gateway.serve_now``); what it leaves gets one task running ``handler``. Per call that is one
parse and one or two writes; benchmarks/gateway_overhead.py measures it next to nginx.

The edge limits (``chutes.core.edge``, docs/security.md) are enforced here as in ``chutes.core.edge.protocol`` and with
its ``EdgeGuard`` (admission, eviction of the longest-idle connection, one sweeper for every deadline):
request target over ``max_request_line``: 414; header section over ``max_header_bytes`` or ``max_headers``
fields: 431 (an unfinished head is counted as it arrives); no Host or two: 400; head not complete within
``header_timeout``: 408; no byte of an announced body for ``body_timeout``: 408; idle keep-alive connections
close after ``idle_timeout``. A body over the gateway's ``max_body_bytes`` is not kept (the call gets 413 and
the connection closes). Keep-alive and pipelining: requests are answered in order, one at a time; more than
``_PIPELINE_DEPTH`` waiting pauses reading. A percent-encoded slash stays encoded in the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any

import httptools

from chutes.core.asgi import BodyTooLarge, ClientGone
from chutes.core.edge.limits import EdgeLimits
from chutes.core.edge.protocol import APP, BODY, HEAD, NEW, EdgeGuard, GuardedConnection, _answer, decode_path
from chutes.core.waiting import wait_event

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]
Handler = Callable[["Incoming"], Awaitable[None]]
# Serves a complete request without a task when it can (everything it needs is cached); False: it did nothing.
FastHandler = Callable[["Incoming"], bool]

_PIPELINE_DEPTH = 16  # complete requests waiting behind the one being answered before reading pauses
_HEADER_HINT = "send fewer or smaller headers"
_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus if s.value >= 200
}
_NO_BODY = frozenset({204, 304})
_CLOSE = b"connection: close\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"


_date: list[Any] = [0, b""]  # [second, b"date: ...\r\n"]: formatted once a second at most


def _date_line() -> bytes:
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, b"date: %s\r\n" % formatdate(now, usegmt=True).encode()
    line: bytes = _date[1]
    return line


def json_error_body(detail: str, hint: str | None) -> bytes:
    return json.dumps({"detail": detail, "hint": hint}).encode()


def header_lines(headers: Headers) -> bytes:
    """Header pairs as the lines an answer's head carries (each ending in CRLF), for ``Incoming.respond``."""
    return b"".join(b"%b: %b\r\n" % pair for pair in headers)


_INTERNAL_ERROR = (header_lines([(b"content-type", b"application/json")]), b'{"detail":"internal error"}')


class Incoming:
    """One HTTP request as the gateway sees it, and the way to answer it."""

    __slots__ = (
        "_body",
        "_size",
        "_waiter",
        "chunked",
        "client_ip",
        "complete",
        "expects_continue",
        "finished",
        "headers",
        "host",
        "keep_alive",
        "lost",
        "method",
        "on_lost",
        "path",
        "proto",
        "query",
        "started",
        "too_large",
    )

    scheme = "http"

    def __init__(
        self,
        proto: HttpProtocol,
        method: str,
        path: str,
        query: str,
        headers: Headers,
        host: bytes,
        keep_alive: bool,
        expect_continue: bool,
    ) -> None:
        self.proto = proto
        self.method = method
        self.path = path
        self.query = query  # raw query string (latin-1), without '?'
        self.headers = headers  # names lower-case
        self.host = host
        self.client_ip = proto.peer
        self.keep_alive = keep_alive
        self.expects_continue = expect_continue  # the client waits for '100 Continue' before it sends the body
        self._body: list[bytes] = []
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        # Called once if the client's connection closes (the proxy closes the instance's connection with it).
        self.on_lost: Callable[[], None] | None = None
        self.complete = False  # the whole body has arrived
        self.too_large = False
        self.lost = False  # the client's connection is gone
        self.started = False  # the answer's head is written
        self.finished = False
        self.chunked = False

    def body(self) -> bytes:
        """The body received so far (all of it once ``complete``)."""
        body = self._body
        return body[0] if len(body) == 1 else b"".join(body)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    # -- the request body, as the parser delivers it

    def _take(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.proto.max_body:
            self.too_large = True
            self._body.clear()  # not kept: the call is refused with 413
        elif not self.too_large:
            self._body.append(chunk)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _lose(self) -> None:
        self.lost = True
        self._wake()
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    async def read_body(self, limit: int) -> bytes:
        """The whole request body; BodyTooLarge past ``limit`` bytes, ClientGone if the client left."""
        length = self.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BodyTooLarge
        if self.expects_continue:
            self.expects_continue = False
            self.proto.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not self.complete:
            if self.lost:
                raise ClientGone
            if self.too_large or self._size > limit:
                raise BodyTooLarge
            self._waiter = self.proto.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.too_large or self._size > limit:
            raise BodyTooLarge
        body = self._body
        return body[0] if len(body) == 1 else b"".join(body)

    # -- the answer

    def _head(self, status: int, headers: bytes, tail: bytes, body: bytes = b"") -> bytes:
        """The answer's head (status line, date, ``headers``, ``tail``) and ``body``, as one piece to write."""
        line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
        date = _date[1] if int(time.time()) == _date[0] else _date_line()
        return b"".join((line, date, headers, b"" if self.keep_alive else _CLOSE, tail, body))

    def respond(self, status: int, headers: bytes, body: bytes) -> None:
        """A complete answer with a Content-Length, in one write. ``headers``: the header lines, each ending in
        CRLF (``header_lines`` writes them from pairs)."""
        if self.started or self.lost:
            return
        self.started = True
        if status in _NO_BODY:
            data = self._head(status, headers, b"\r\n")
        else:
            tail = b"content-length: %d\r\n\r\n" % len(body)
            data = self._head(status, headers, tail, b"" if self.method == "HEAD" else body)
        proto = self.proto
        proto.write(data)
        if not self.finished:  # ``finish`` for an answer that is not chunked
            self.finished = True
            proto.answered(self)

    def start(self, status: int, headers: bytes, length: int | None = None, first: bytes = b"") -> None:
        """The head of an answer whose body follows with ``write``: chunked unless ``length`` is given.
        ``headers`` as for ``respond``; ``first``: a first piece of the body that has already arrived, sent in the
        same write."""
        if self.started or self.lost:
            return
        self.started = True
        if length is not None:
            tail = b"content-length: %d\r\n\r\n" % length
        elif status in _NO_BODY or self.method == "HEAD":
            tail = b"\r\n"
        else:
            self.chunked = True
            tail = _CHUNKED + b"\r\n"
        if first and self.method != "HEAD":
            first = b"%x\r\n%b\r\n" % (len(first), first) if self.chunked else first
        else:
            first = b""
        self.proto.write(self._head(status, headers, tail, first))

    def send(self, chunk: bytes) -> None:
        """One piece of the body, sent at once (``proto.drain`` is set while the client's connection is full)."""
        if self.lost or not chunk or self.method == "HEAD":
            return
        self.proto.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self.chunked else chunk)

    async def write(self, chunk: bytes) -> None:
        """``send``, then wait while the client reads slower than the instance writes."""
        self.send(chunk)
        if self.proto.drain is not None:
            await self.proto.drained()

    def finish(self) -> None:
        """The answer is complete: the connection goes on with the next request (or closes)."""
        if self.finished:
            return
        self.finished = True
        if self.chunked and not self.lost:
            self.proto.write(b"0\r\n\r\n")
        self.proto.answered(self)


class HttpProtocol(GuardedConnection, asyncio.Protocol):
    """One client connection; see the module docstring."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.guard = server.guard
        self.loop = server.loop
        self.max_body = server.max_body
        self._max_url = server.max_url
        self._max_fields = server.max_fields
        self._max_field_bytes = server.max_field_bytes
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.active: Incoming | None = None  # the request being answered
        self.queue: deque[Incoming] = deque()  # complete requests behind it (pipelined)
        self.parsing: Incoming | None = None  # the request whose body the parser is reading
        self._ready: Incoming | None = None  # became the active request in this read: served once it is parsed
        self.drain: asyncio.Future[None] | None = None
        self._read_paused = False
        self._phase = NEW
        self._since = self._now = 0.0
        self._in_head = False
        self._head_bytes = self._hosts = self._chunk = 0
        self._url = b""
        self._headers: Headers = []
        self._host = b""
        self._expect = False
        self._refusal: tuple[int, str, str, str] | None = None

    # -- connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self._since = self._now = self.loop.time()
        self.server.connections.add(self)
        self._admit()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        connections = self.server.connections
        connections.discard(self)
        if not connections:
            self.server.emptied.set()
        for request in (self.active, self.parsing, *self.queue):
            if request is not None:
                request._lose()
        self.queue.clear()
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        if self.drain is None:
            self.drain = self.loop.create_future()

    def resume_writing(self) -> None:
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drained(self) -> None:
        if self.drain is not None:
            await asyncio.shield(self.drain)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def data_received(self, data: bytes) -> None:
        self._chunk = len(data)
        self._now = self.loop.time()
        if self._phase == BODY:
            self._since = self._now
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol switch here: the request (already complete) is answered, then the connection closes.
            if self.active is not None:
                self.active.keep_alive = False
            self._dispatch()
            return
        except httptools.HttpParserError as exc:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                self._refuse(400, "invalid", f"invalid HTTP request: {exc}", "send a valid HTTP/1.1 request")
            self._ready = None
            return
        if self._ready is not None:
            self._dispatch()
        if self._in_head:  # this chunk ended inside a request head (also one pipelined behind a busy request)
            self._head_bytes += len(data)
            if self._head_bytes > self.server.max_head:
                self._refuse(431, "header_bytes", f"request head over {self.server.max_head} bytes", _HEADER_HINT)

    # -- parser callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        self._headers = []
        self._host = b""
        self._expect = False
        self._hosts = self._head_bytes = 0
        if self._phase != HEAD:
            self._phase = HEAD
            self._since = self._now

    def on_url(self, url: bytes) -> None:
        url = self._url + url if self._url else url
        self._url = url
        if len(url) > self._max_url:
            self._fail(414, "request_line", f"request target over {self._max_url} bytes", "send a shorter URL")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers  # the fields so far: their count is the limit's (their bytes: on_headers_complete)
        if len(headers) >= self._max_fields:
            self._fail(431, "header_count", f"more than {self._max_fields} header fields", _HEADER_HINT)
        name = name.lower()
        # llhttp keeps trailing whitespace, which is not part of a field value (RFC 9110 §5.5).
        value = value.rstrip(b" \t")
        if name == b"host":
            self._hosts += 1
            self._host = value
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        # The header section cannot be longer than the bytes it came in: counted only when those could hold more
        # than the limit (the usual request arrives in one short read).
        if self._head_bytes + self._chunk > self._max_field_bytes:
            size = sum(len(name) + len(value) + 4 for name, value in self._headers)
            if size > self._max_field_bytes:
                self._fail(431, "header_bytes", f"request headers over {self._max_field_bytes} bytes", _HEADER_HINT)
        parser = self.parser
        if self._hosts != 1:
            if self._hosts > 1:
                self._fail(400, "host", "more than one Host header", "send exactly one Host header")
            if parser.get_http_version() != "1.0":
                self._fail(400, "host", "no Host header", "HTTP/1.1 requests must carry a Host header")
        target = self._url
        try:
            # find() rather than ``in``: bytes.__contains__ tries its operand as an int first, raising and clearing
            # a TypeError on every call.
            if target[:1] == b"/" and target.find(b"#") < 0:  # origin form, what clients send: no URL parser
                raw, _, query_bytes = target.partition(b"?")
            else:
                url = httptools.parse_url(target)
                raw, query_bytes = url.path or b"/", url.query or b""
            path = decode_path(raw) if raw.find(b"%") >= 0 else raw.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError, ValueError):
            self._fail(400, "invalid", "invalid request target", "send a valid URL path")
        query = query_bytes.decode("latin-1") if query_bytes else ""
        request = Incoming(
            self, parser.get_method().decode("ascii"), path, query, self._headers, self._host,
            parser.should_keep_alive(), self._expect,
        )  # fmt: skip
        self.parsing = request
        self._phase = BODY
        self._since = self._now
        self.guard.waiting.pop(self, None)
        if self.active is None:
            self.active = request
            self._ready = request  # served when this read is parsed: its body may be in it
        else:
            self.queue.append(request)
            if len(self.queue) >= _PIPELINE_DEPTH and not self._read_paused and self.transport is not None:
                self._read_paused = True
                self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        if request is not None:
            request._take(body)
            if request._waiter is not None:
                request._wake()

    def on_message_complete(self) -> None:
        request, self.parsing = self.parsing, None
        if request is not None:
            request.complete = True
            if request._waiter is not None:
                request._wake()
        if self.active is not None:
            self._phase = APP
        else:
            self._to_idle()

    # -- serving

    def _dispatch(self) -> None:
        """Serve the request that became active in this read: without a task when the fast handler can."""
        request, self._ready = self._ready, None
        if request is None or request.lost:
            return
        self._start(request)

    def _start(self, request: Incoming) -> None:
        fast = self.server.fast
        if fast is not None and request.complete:
            try:
                if fast(request):
                    return
            except Exception:
                log.exception("gateway: unhandled error answering %s %s", request.method, request.path)
                if not request.started:
                    request.respond(500, *_INTERNAL_ERROR)
                if not request.finished:
                    request.finished = True
                    self.close_quietly()
                return
        self.loop.create_task(self._serve(request))

    def serve(self, request: Incoming, work: Awaitable[None]) -> None:
        """Go on serving ``request`` with ``work`` in a task (what the fast handler began and cannot finish)."""
        self.loop.create_task(self._serve(request, work))

    async def _serve(self, request: Incoming, work: Awaitable[None] | None = None) -> None:
        try:
            await (self.server.handler(request) if work is None else work)
        except Exception:
            log.exception("gateway: unhandled error answering %s %s", request.method, request.path)
            if not request.started:
                request.respond(500, *_INTERNAL_ERROR)
        finally:
            if not request.finished:
                # An answer that started and broke off: the client must see it truncated, never complete.
                request.finished = True
                self.close_quietly()

    def answered(self, request: Incoming) -> None:
        """``request``'s answer is complete: serve the next pipelined one, wait for one, or close."""
        if request is not self.active:
            return
        self.active = None
        if not (request.keep_alive and request.complete and not request.too_large) or self.server.closing:
            self.close_quietly()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.active = nxt
            if self._read_paused and self.transport is not None:
                self._read_paused = False
                self.transport.resume_reading()
            self._start(nxt)
        elif self.parsing is None and not self._in_head:
            self._to_idle()

    # -- deadlines and refusals (the guard's sweeper calls ``check``)

    def _idle_closable(self) -> bool:
        return self.active is None

    def _refuse(self, status: int, kind: str, detail: str, hint: str, extra: bytes = b"") -> None:
        """Answer ``status`` with a JSON error (unless an answer already started) and close the connection."""
        self.guard.log.hit(kind, f"{detail} ({status})", self.peer)
        active = self.active
        started = active is not None and active.started
        for request in (active, self.parsing, *self.queue):
            if request is not None:
                request.finished = request.started = True  # nothing more goes out for them
                request._lose()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if not started:
                transport.write(_answer(status, detail, hint, extra))
            transport.close()
        self.guard.forget(self)


class HttpServer:
    """Listens on a socket and serves every request with ``handler``; ``shutdown`` stops it gracefully."""

    def __init__(
        self, handler: Handler, limits: EdgeLimits, max_body: int, name: str = "gateway",
        fast: FastHandler | None = None,
    ) -> None:  # fmt: skip
        # Half the file descriptors at most go to client connections: each call also holds one to an instance.
        self.guard = EdgeGuard(limits, name, fd_fraction=0.5)
        limits = self.guard.limits
        self.handler = handler
        self.fast = fast  # tried first for a complete request; ``handler`` serves what it leaves
        self.max_body = max_body
        self.max_url = limits.max_request_line
        self.max_fields = limits.max_headers
        self.max_field_bytes = limits.max_header_bytes
        # request line, header section and what is left of a chunk: the most an unfinished head may hold
        self.max_head = limits.max_request_line + limits.max_header_bytes + 1024
        self.connections: set[HttpProtocol] = set()
        self.emptied = asyncio.Event()  # set when the last connection closes
        self.closing = False
        self._server: asyncio.Server | None = None
        self.loop = asyncio.get_running_loop()  # built inside the loop that serves

    async def start(self, sock: Any, backlog: int = 2048) -> None:
        self._server = await self.loop.create_server(lambda: HttpProtocol(self), sock=sock, backlog=backlog)

    def abort(self) -> None:
        """Stop now: every connection is cut (a second SIGTERM)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.abort()

    async def shutdown(self, grace: float = 30.0) -> None:
        """Stop accepting, let the calls in flight finish (up to ``grace`` seconds), then close everything."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for proto in list(self.connections):
            if proto.active is None:
                proto.close_quietly()
        if self.connections:
            self.emptied.clear()
            await wait_event(self.emptied, grace)
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
