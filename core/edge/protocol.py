"""uvicorn's httptools protocol with the edge limits enforced per connection, at the parser.

What a request may not do, and the answer it gets (JSON ``{"detail", "hint"}``, then the connection closes):

- a request target over ``max_request_line`` bytes: 414; a header section over ``max_header_bytes`` or more
  than ``max_headers`` fields: 431. The bytes of an unfinished header section are counted as they arrive, so
  a client cannot make the server buffer a huge header before it is refused;
- no ``Host`` header (HTTP/1.1), or more than one: 400 (RFC 9112 §3.2);
- headers not complete ``header_timeout`` seconds after the connection opened (or after the first byte of a
  request on a kept-alive connection): 408 (a connection that sent nothing is just closed); no byte of an
  expected body for ``body_timeout`` seconds while the application waits for it: 408;
- more than ``max_connections`` open: the connection that has waited longest without a request in progress
  is closed to make room (an idle flood cannot lock out new callers); when every connection is busy, the new
  one gets 503 at once.

Idle keep-alive connections close after ``idle_timeout`` (this replaces uvicorn's keep-alive timer). A
percent-encoded slash (``%2F``) in the path is kept encoded in ``scope["path"]``: decoding it would turn one
path segment into two (``/alice%2Fchat`` must not address ``/alice/chat``); ``raw_path`` is unchanged.

Per call the limits cost a clock read per received chunk and a few attribute stores; the timeouts are
checked by one timer per server (``EdgeGuard``), never by a timer per request. Every refusal is counted and
logged (at most one line per kind every ``LOG_EVERY`` seconds, with the count of those in between).
"""

from __future__ import annotations

import asyncio
import collections
import http
import json
import logging
import re
import resource
import time
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn
from urllib.parse import unquote

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from chutes.core.edge.limits import EdgeLimits

log = logging.getLogger("chutes.core.edge")

# Where a connection is in its request cycle (what the sweeper checks it against).
NEW, IDLE, HEAD, BODY, APP = range(5)
LOG_EVERY = 10.0  # seconds between two log lines about the same kind of refusal
_SLASH = re.compile(rb"%2[fF]")


def decode_path(raw: bytes) -> str:
    """``raw`` percent-decoded, except encoded slashes, which stay ``%2F``."""
    return "%2F".join(unquote(part.decode("ascii")) for part in _SLASH.split(raw))


def nofile_budget(fraction: float) -> int | None:
    """``fraction`` of this process's file-descriptor limit (raised to the hard limit first), or None if unknown.

    A server must run out of connection slots before it runs out of descriptors: past the descriptor limit
    ``accept`` fails and every call fails with it, silently.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    return max(16, int(soft * fraction))


class LimitLog:
    """Counts refusals per kind and logs them without flooding the log under attack."""

    def __init__(self, server: str, clock: Any = time.monotonic) -> None:
        self.server = server
        self.counts: collections.Counter[str] = collections.Counter()
        self._clock = clock
        self._last: dict[str, float] = {}
        self._quiet: collections.Counter[str] = collections.Counter()

    def hit(self, kind: str, message: str, peer: str | None, level: int = logging.WARNING) -> None:
        self.counts[kind] += 1
        now = self._clock()
        if now - self._last.get(kind, -LOG_EVERY) < LOG_EVERY:
            self._quiet[kind] += 1
            return
        more = self._quiet.pop(kind, 0)
        self._last[kind] = now
        suffix = f" ({more} more like it in the last {LOG_EVERY:g} s)" if more else ""
        log.log(level, "%s: %s [client %s]%s", self.server, message, peer or "?", suffix)


class GuardedConnection:
    """What every server protocol under an ``EdgeGuard`` shares (uvicorn's ``EdgeProtocol`` here, the gateway's own
    ``HttpProtocol``): the per-phase deadlines the guard's sweeper checks, a quiet close, and refusing from inside a
    parser callback. A subclass sets the attributes below and answers a refusal in ``_refuse``."""

    loop: asyncio.AbstractEventLoop
    transport: Any
    _phase: int
    _since: float
    _refusal: tuple[int, str, str, str] | None

    if TYPE_CHECKING:  # a class attribute in EdgeProtocol, an instance attribute in the gateway's protocol

        @property
        def guard(self) -> EdgeGuard: ...

        @guard.setter
        def guard(self, value: EdgeGuard) -> None: ...

        @property
        def peer(self) -> str | None: ...

    def _idle_closable(self) -> bool:
        """An idle connection past its deadline may be closed (not while an answer is still going out)."""
        return True

    def _body_clock_runs(self) -> bool:
        """The body deadline counts (not while this side paused reading)."""
        return True

    def check(self, now: float, limits: EdgeLimits) -> None:
        """Close this connection if it is past the deadline of its phase (called by the guard's sweeper)."""
        phase, waited = self._phase, now - self._since
        if phase == APP or self.transport is None or self.transport.is_closing():
            return
        if phase == IDLE:
            if waited > limits.idle_timeout and self._idle_closable():
                self.guard.log.counts["idle_closed"] += 1
                self.close_quietly()
        elif phase == BODY:
            if waited > limits.body_timeout and self._body_clock_runs():
                detail = f"no byte of the request body for {limits.body_timeout:g} s"
                self._refuse(408, "body_timeout", detail, "send the body without pausing")
        elif waited > limits.header_timeout:
            if phase == NEW:
                self.guard.log.hit("header_timeout", f"no request within {limits.header_timeout:g} s", self.peer,
                                   logging.INFO)  # fmt: skip
                self.close_quietly()
            else:
                detail = f"request headers not complete within {limits.header_timeout:g} s"
                self._refuse(408, "header_timeout", detail, "send the whole request head at once")

    def _admit(self) -> None:
        """Count this new connection with the guard; past its limit, answer 503 and close."""
        if not self.guard.admit(self):
            limit = self.guard.limits.max_connections
            self._refuse(
                503, "connections", f"the server is at its limit of {limit} open connections, all busy",
                "retry shortly", extra=b"retry-after: 1\r\n",
            )  # fmt: skip

    def _to_idle(self) -> None:
        """Between requests: the idle deadline runs from now, and the guard's sweeper watches this connection."""
        self._phase = IDLE
        self._since = self.loop.time()
        self.guard.waiting[self] = None

    def close_quietly(self) -> None:
        self.guard.forget(self)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _fail(self, status: int, kind: str, detail: str, hint: str) -> NoReturn:
        """Refuse from inside a parser callback: httptools wraps the exception, ``data_received`` answers."""
        self._refusal = (status, kind, detail, hint)
        raise Refused(detail)

    def _refuse(self, status: int, kind: str, detail: str, hint: str, extra: bytes = b"") -> None:
        raise NotImplementedError


class Refused(Exception):
    """Raised in a parser callback to stop parsing a request that broke a limit."""


class EdgeGuard:
    """One server's limits, its open connections and the timer that enforces the timeouts."""

    def __init__(self, limits: EdgeLimits, server: str = "server", fd_fraction: float | None = None) -> None:
        limits = limits.validate()
        if fd_fraction is not None:
            budget = nofile_budget(fd_fraction)
            if budget is not None and budget < limits.max_connections:
                log.info("%s: %d open connections at most (from the file-descriptor limit; asked for %d)",
                         server, budget, limits.max_connections)  # fmt: skip
                limits = limits.replace(max_connections=budget)
        self.limits = limits
        self.server = server
        self.log = LimitLog(server)
        #: every open connection
        self.open: dict[GuardedConnection, None] = {}
        #: connections without a request in progress, the one waiting longest first (eviction order)
        self.waiting: dict[GuardedConnection, None] = {}
        self.interval = min(1.0, max(0.05, min(limits.header_timeout, limits.idle_timeout, limits.body_timeout) / 5))
        self._timer: asyncio.TimerHandle | None = None

    def protocol(self) -> type[EdgeProtocol]:
        """The protocol class to give uvicorn (``uvicorn.Config(http=guard.protocol())``)."""
        limits = self.limits
        attrs = {
            "guard": self,
            "max_url": limits.max_request_line,
            "max_fields": limits.max_headers,
            "max_field_bytes": limits.max_header_bytes,
            # request line, header section and what is left of a chunk: the most an unfinished head may hold
            "max_head": limits.max_request_line + limits.max_header_bytes + 1024,
        }
        return type("EdgeProtocol", (EdgeProtocol,), attrs)

    @property
    def counts(self) -> collections.Counter[str]:
        return self.log.counts

    # -- connections

    def admit(self, proto: GuardedConnection) -> bool:
        """Register a new connection; False when it must be refused (every slot holds a request in progress)."""
        if len(self.open) >= self.limits.max_connections:
            victim = next(iter(self.waiting), None)
            if victim is None:
                return False
            self.log.hit(
                "evicted",
                f"connection limit ({self.limits.max_connections}) reached: closed the connection idle longest",
                victim.peer,
            )
            victim.close_quietly()
        self.open[proto] = None
        self.waiting[proto] = None
        if self._timer is None:
            self._timer = proto.loop.call_later(self.interval, self._sweep, proto.loop)
        return True

    def forget(self, proto: GuardedConnection) -> None:
        self.open.pop(proto, None)
        self.waiting.pop(proto, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close connections past their deadline; runs every ``interval`` while any connection is open."""
        self._timer = None
        now = loop.time()
        limits = self.limits
        for proto in list(self.open):
            try:
                proto.check(now, limits)
            except Exception:  # one broken connection must not stop the sweeps
                log.exception("%s: checking a connection's deadlines failed", self.server)
                proto.close_quietly()
        if self.open:
            self._timer = loop.call_later(self.interval, self._sweep, loop)


class EdgeProtocol(GuardedConnection, HttpToolsProtocol):
    """See the module docstring; built per server by ``EdgeGuard.protocol()``."""

    guard: ClassVar[EdgeGuard]
    max_url: ClassVar[int]
    max_fields: ClassVar[int]
    max_field_bytes: ClassVar[int]
    max_head: ClassVar[int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = NEW
        self._since = 0.0  # when the current phase began (BODY: when the last byte came)
        self._now = 0.0  # when the last chunk came
        self._head_bytes = 0  # bytes received while a request head was incomplete
        self._in_head = False
        self._url_bytes = 0
        self._field_bytes = 0
        self._fields = 0
        self._hosts = 0
        self._refusal: tuple[int, str, str, str] | None = None

    @property
    def peer(self) -> str | None:
        return self.client[0] if self.client else None

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self._now = self.loop.time()
        self._admit()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        now = self._now = self.loop.time()
        phase = self._phase
        if phase == BODY:
            self._since = now
        elif phase < BODY and phase != HEAD:
            if phase == IDLE:
                self._since = now
            self._phase = HEAD
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if self._refusal is not None:
                status, kind, detail, hint = self._refusal
                self._refuse(status, kind, detail, hint)
            else:
                self._refuse(400, "invalid", f"invalid HTTP request: {exc}", "send a valid HTTP/1.1 request")
            return
        if self._in_head:  # this chunk ended inside a request head (also one pipelined behind a busy request)
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._refuse(431, "header_bytes", f"request head over {self.max_head} bytes", _HEADER_HINT)

    # -- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._url_bytes = self._field_bytes = self._fields = self._hosts = self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._url_bytes += len(url)
        if self._url_bytes > self.max_url:
            self._fail(414, "request_line", f"request target over {self.max_url} bytes", "send a shorter URL")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        self._field_bytes += len(name) + len(value) + 4
        if self._fields > self.max_fields:
            self._fail(431, "header_count", f"more than {self.max_fields} header fields", _HEADER_HINT)
        if self._field_bytes > self.max_field_bytes:
            self._fail(431, "header_bytes", f"request headers over {self.max_field_bytes} bytes", _HEADER_HINT)
        name = name.lower()
        # llhttp keeps trailing whitespace, which is not part of a field value (RFC 9110 §5.5).
        value = value.rstrip(b" \t")
        if name == b"host":
            self._hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._hosts != 1:
            if self._hosts > 1:
                self._fail(400, "host", "more than one Host header", "send exactly one Host header")
            if self.parser.get_http_version() != "1.0":
                self._fail(400, "host", "no Host header", "HTTP/1.1 requests must carry a Host header")
        self._phase = BODY
        self._since = self._now
        self.guard.waiting.pop(self, None)
        super().on_headers_complete()
        raw = self.scope.get("raw_path")
        if raw and raw.find(b"%") >= 0:
            self.scope["path"] = self.root_path + decode_path(raw)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            self._to_idle()  # answered before its body was read: nothing more is expected
        else:
            self._phase = APP

    def on_response_complete(self) -> None:
        # uvicorn's, without its per-response keep-alive timer: the sweeper enforces ``idle_timeout``.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self.cycle is not None and self.cycle.more_body:
            self._phase = BODY  # the rest of a body the application did not read
            self._since = self.loop.time()
        else:
            self._to_idle()

    # -- deadlines and refusals

    def _body_clock_runs(self) -> bool:
        return not self.flow.read_paused

    def _refuse(self, status: int, kind: str, detail: str, hint: str, extra: bytes = b"") -> None:
        """Answer ``status`` with a JSON error (unless an answer already started) and close the connection."""
        self.guard.log.hit(kind, f"{detail} ({status})", self.peer)
        cycle = self.cycle
        started = cycle is not None and cycle.response_started
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application sees the client gone; nothing it sends goes out
            cycle.message_event.set()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if not started:
                transport.write(_answer(status, detail, hint, extra))
            transport.close()
        self.guard.forget(self)


_HEADER_HINT = "send fewer or smaller headers"


def _answer(status: int, detail: str, hint: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"detail": detail, "hint": hint}).encode()
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode()),
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body),
            extra,
            b"\r\n",
            body,
        ]
    )
