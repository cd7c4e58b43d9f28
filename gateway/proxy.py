"""Forwarding one call to an instance: choose, sign, send, retry, relay.

A call is retried on another instance only while nothing has been sent to the client: when an instance
answers 429 (full) or 503 (draining or not ready), refuses the connection, or drops it before answering.
Answers are relayed as they arrive (Server-Sent Events and chunked bodies are never buffered); a short
answer of known length goes out in one write. With no instance at all the call is held while the scheduler
starts one (scale from zero), up to ``hold_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from chutes.core.asgi import BodyTooLarge, ClientGone
from chutes.core.signing import Signer
from chutes.core.unique import random_hex
from chutes.core.waiting import wait_event
from chutes.gateway.balancer import NoUpstream, Upstream, choose
from chutes.gateway.config import GatewaySettings
from chutes.gateway.discovery import ConsulDiscovery, ServiceWatch
from chutes.gateway.headers import client_response_head, upstream_request
from chutes.gateway.metering import InvocationRecorder, encode_record
from chutes.gateway.metrics import GatewayMetrics
from chutes.gateway.routes import Identity, Route, RouteInfo, pick_cord
from chutes.gateway.scheduler_client import SchedulerAPI
from chutes.gateway.server import Incoming, header_lines, json_error_body
from chutes.gateway.upstream import (
    ConnectFailed,
    Connection,
    ConnectionPool,
    Disconnected,
    Head,
    ReadTimeout,
    UpstreamError,
)
from chutes.manifest import CordSpec

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({429, 503})
_INVOCATION_ID = b"x-chutes-invocation-id"
_JSON_TYPE = (b"content-type", b"application/json")
_CLIENT_CLOSED = 499  # recorded (never sent) when the client went away before the answer
_LINES_KEPT = 4096  # request lines kept per (method, target, instance)

# 128 random bits per invocation id, without a system call per call (``chutes.core.unique``).
_ids = random_hex(16)
#: A fresh invocation id: 32 lower-case hex digits.
new_invocation_id = _ids.take_str


@dataclass(slots=True)
class Call:
    """One authorised call to one cord (or to a stream/non-stream pair, settled by the instance's answer)."""

    request: Incoming
    route: Route
    cords: tuple[CordSpec, ...]
    caller: Identity
    invocation_id: str
    started: float  # perf_counter() when the request arrived
    content_type: bytes | None = None  # of the instance's answer, once relayed


class _Failed(Exception):
    """An answer the gateway makes itself (no instance, too large, timed out)."""

    def __init__(self, status: int, detail: str, hint: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.hint = hint
        self.retry_after = retry_after


class Proxy:
    """Sends calls to instances over keep-alive connections pooled per instance."""

    def __init__(
        self,
        settings: GatewaySettings,
        discovery: ConsulDiscovery,
        metrics: GatewayMetrics,
        scheduler: SchedulerAPI,
    ) -> None:
        self.settings = settings
        self.discovery = discovery
        self.metrics = metrics
        self.scheduler = scheduler
        self.pool = ConnectionPool(settings.connect_timeout, settings.read_timeout, settings.upstream_idle_timeout)
        self._last_wake: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        # (method, target, instance) -> the request line with the instance's host header, and the request line
        # as the signature covers it: written once, not once per call
        self._lines: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        self.pool.close()

    def start(self, call: Call, recorder: InvocationRecorder) -> bool:
        """Start ``call`` synchronously when nothing needs waiting for: its body is here, its chute's instance
        table is loaded, an instance can take it and a kept-alive connection to it is idle. False: nothing was
        done, ``forward`` serves the call. A short answer is then relayed from the connection's callbacks
        (``_Exchange``); anything else (a stream, a refusal to retry, a failure) continues in ``forward``."""
        request = call.request
        if not request.complete or request.too_large or request.expects_continue:
            return False
        body = request.body()
        if len(body) > self.settings.max_body_bytes:
            return False
        route = call.route
        watch = self.discovery.watch(route.service)
        if not watch.ready:
            return False
        up = choose(watch.upstreams, route.concurrency, time.monotonic())
        if isinstance(up, NoUpstream):
            return False
        conn = self.pool.idle(up.host, up.port)
        if conn is None:
            return False
        cord = call.cords[0]
        query = request.query
        target = cord.public_api_path + "?" + query if query else cord.public_api_path
        up.in_flight += 1
        exchange = _Exchange(self, call, recorder, up, conn, len(body))
        request.on_lost = conn.close
        conn.listener = exchange.progress
        conn.start(self._encode(call, up, cord.public_api_method, target, body))
        return True

    async def forward(
        self, call: Call, recorder: InvocationRecorder, first: _Exchange | None = None, started_at: float = 0.0
    ) -> None:
        """Serve ``call`` from an instance (or answer why not) and record it; never raises for an instance.
        ``first``: the exchange ``start`` began, continued here."""
        label = call.route.label
        started_at = started_at or time.time()
        status, bytes_in, bytes_out = 500, 0, 0
        cord = call.cords[0]
        try:
            body = await call.request.read_body(self.settings.max_body_bytes)
            bytes_in = len(body)
            query = call.request.query
            status, bytes_out = await self._send(call, cord, query, label, body, first)
        except BodyTooLarge:
            limit = self.settings.max_body_bytes
            status = await self._error(call, _Failed(413, f"request body over {limit} bytes", "send a smaller body"))
        except ClientGone:
            status = _CLIENT_CLOSED
        except _Failed as failed:
            status = await self._error(call, failed)
        finally:
            self._record(call, recorder, status, bytes_in, bytes_out, started_at)

    def _record(
        self, call: Call, recorder: InvocationRecorder, status: int, bytes_in: int, bytes_out: int, started_at: float
    ) -> None:
        """Count the answered call in the metrics and queue its metering record."""
        cord = call.cords[0]
        if len(call.cords) > 1:
            cord = pick_cord(call.cords, call.request.query, call.content_type)
        elapsed = time.perf_counter() - call.started
        self.metrics.observe(call.route.label, cord.name, status, elapsed)
        chute_id = call.route.chute_id
        line = encode_record(
            call.invocation_id,
            chute_id,
            call.caller.user_id,
            cord.name,
            status,
            int(elapsed * 1_000_000),
            bytes_in,
            bytes_out,
            int(started_at * 1_000_000),
        )
        recorder.record(line, chute_id, started_at + elapsed)

    def _encode(self, call: Call, up: Upstream, method: str, target: str, body: bytes) -> bytes:
        """The request to send an instance, signed (a fresh nonce each time)."""
        key = (method, target, up.authority)
        lines = self._lines.get(key)
        if lines is None:
            lines = (f"{method} {target} HTTP/1.1\r\nhost: {up.authority}\r\n".encode(),
                     f"\n{method.upper()}\n{target}\n".encode())  # fmt: skip
            if len(self._lines) >= _LINES_KEPT:  # bounded: targets with query strings are many
                self._lines.clear()
            self._lines[key] = lines
        request = call.request
        client_ip = request.client_ip
        signer = call.route.signer or _signer(call.route)
        return upstream_request(
            lines[0],
            request.headers,
            client_ip=None if client_ip is None else client_ip.encode(),
            host=request.host,
            scheme=request.scheme.encode(),
            invocation_id=call.invocation_id.encode(),
            signature=signer.header(lines[1], body),
            body=body,
        )

    async def _send(
        self, call: Call, cord: CordSpec, query: str, label: str, body: bytes, first: _Exchange | None = None
    ) -> tuple[int, int]:
        """Try instances until one answers; returns the status and body bytes relayed."""
        settings = self.settings
        info = call.route.info
        target = cord.public_api_path + ("?" + query if query else "")
        method = cord.public_api_method
        watch = self.discovery.watch(info.service)
        if not watch.loaded.is_set():
            await wait_event(watch.loaded, settings.first_table_wait)
        avoid: set[str] = set()
        attempts = busy = unreachable = last = 0
        while True:
            started: Connection | None = None
            if first is not None:  # begun by ``start``: the instance is chosen and counted, the request sent
                choice, started, first = first.up, first.conn, None
            else:
                chosen = choose(watch.upstreams, info.concurrency, time.monotonic(), avoid)
                if isinstance(chosen, NoUpstream):
                    if chosen is NoUpstream.BUSY or (busy and not unreachable):
                        raise _Failed(
                            429, f"chute {info.name!r} is at capacity", "retry shortly", settings.retry_after_busy
                        )
                    if attempts >= settings.max_attempts:
                        raise _Failed(503, f"no instance of chute {info.name!r} could take the call", None,
                                      settings.retry_after_unavailable)  # fmt: skip
                    if await self._hold(info, watch, label, avoid):
                        continue
                    raise _Failed(
                        503,
                        f"no instance of chute {info.name!r} became ready within {settings.hold_timeout:.0f}s",
                        "the chute is starting (or cannot be placed): retry later, or check 'chutes chutes events'",
                        settings.retry_after_unavailable,
                    )
                if attempts >= settings.max_attempts:
                    status = 429 if busy and not unreachable else 503
                    retry_after = settings.retry_after_busy if status == 429 else settings.retry_after_unavailable
                    raise _Failed(status, f"{attempts} instances of chute {info.name!r} could not take the call",
                                  None, retry_after)  # fmt: skip
                if attempts:
                    self.metrics.retries.labels(label, "busy" if last == 429 else "unreachable").inc()
                choice = chosen
                choice.in_flight += 1
            attempts += 1
            try:
                outcome = await self._attempt(call, choice, method, target, body, label, started)
            finally:
                choice.in_flight -= 1
            if isinstance(outcome, tuple):
                return outcome
            avoid.add(choice.key)
            last = outcome
            if outcome == 429:
                busy += 1
            else:
                unreachable += 1

    async def _attempt(
        self,
        call: Call,
        up: Upstream,
        method: str,
        target: str,
        body: bytes,
        label: str,
        started: Connection | None = None,
    ) -> tuple[int, int] | int:
        """One exchange with one instance: (status, bytes) relayed, or the status that says "try another".
        ``started``: a kept-alive connection the request was already written on."""  # fmt: skip
        request = call.request
        data = b""
        for fresh in (False, True):
            if started is not None:
                conn, reused, started = started, True, None
                if request.lost:  # gone while the instance worked: its connection was closed
                    self.pool.release(conn)
                    raise ClientGone
            else:
                if not data:
                    data = self._encode(call, up, method, target, body)
                try:
                    conn, reused = await self.pool.acquire(up.host, up.port)
                except ConnectFailed as exc:
                    return self._unreachable(up, label, "connect", exc)
                if request.lost:  # gone while the call waited: the instance is never asked
                    self.pool.release(conn)
                    raise ClientGone
                conn.start(data)
            # A client that leaves while the instance works closes the instance's connection: the instance
            # sees the disconnect, cancels the cord (an async one) and frees its slot.
            request.on_lost = conn.close
            try:
                head = await conn.wait_head()
                break
            except Disconnected as exc:
                conn.close()
                if request.lost:
                    log.info("client left during a call to %s: the instance's connection was closed", label)
                    raise ClientGone from exc
                if reused and not fresh:
                    continue  # a kept-alive connection the instance had just closed: once more on a new one
                return self._unreachable(up, label, "disconnect", exc)
            except ReadTimeout as exc:
                conn.close()
                self.metrics.upstream_errors.labels(label, "timeout").inc()
                raise _Failed(504, "the instance did not answer in time", None) from exc
            except UpstreamError as exc:
                conn.close()
                self.metrics.upstream_errors.labels(label, "protocol").inc()
                raise _Failed(502, f"bad answer from the instance: {exc}", None) from exc
            finally:
                request.on_lost = None
        try:
            if head.status in _RETRY_STATUSES:
                self.metrics.upstream_errors.labels(label, str(head.status)).inc()
                if head.status == 503:  # draining or not ready yet: it will say so to the next call too
                    up.cooldown_until = time.monotonic() + self.settings.cooldown
                if head.content_length is not None and head.content_length <= self.settings.buffer_limit:
                    with contextlib.suppress(UpstreamError):
                        await conn.read_all()  # a short refusal: read it, so the connection stays usable
                return head.status
            return await self._relay(call, conn, head, label)
        finally:
            self.pool.release(conn)

    def _unreachable(self, up: Upstream, label: str, kind: str, exc: Exception) -> int:
        """Refused, reset or dropped before any answer: the instance is gone or going; nothing was relayed."""
        self.metrics.upstream_errors.labels(label, kind).inc()
        up.cooldown_until = time.monotonic() + self.settings.cooldown
        self.pool.forget(up.host, up.port)
        log.info("instance %s of %s failed before answering (%s): trying another", up.key, label, exc)
        return 503

    async def _relay(self, call: Call, conn: Connection, head: Head, label: str) -> tuple[int, int]:
        request = call.request
        if len(call.cords) > 1:
            call.content_type = _content_type(head)
        headers = client_response_head(head.headers, call.invocation_id.encode())
        length = head.content_length
        if length is not None and length <= self.settings.buffer_limit:
            try:
                data = await conn.read_all()
            except UpstreamError as exc:
                self.metrics.upstream_errors.labels(label, "read").inc()
                status = 504 if isinstance(exc, ReadTimeout) else 502
                raise _Failed(status, f"the instance failed while answering: {exc}", None) from exc
            request.respond(head.status, headers, data)
            return head.status, len(data)
        # The head and what has come of the body so far (an event stream's first frame) go out in one write.
        first = conn.buffered()
        request.start(head.status, headers, length, first)
        # A client that goes away mid-stream closes the instance's connection, which ends the loop below.
        request.on_lost = conn.close
        if request.lost:
            conn.close()
        sent = len(first)
        try:
            while chunk := await conn.read():
                await request.write(chunk)
                sent += len(chunk)
        except UpstreamError as exc:
            if request.lost:
                return _CLIENT_CLOSED, sent
            # The answer has started: its status cannot change any more. Returning without completing it
            # makes the server cut the client's connection: a truncated answer, never a clean end.
            self.metrics.upstream_errors.labels(label, "stream").inc()
            log.warning("instance stream for %s broke after %d bytes: %s", label, sent, exc)
            return head.status, sent
        finally:
            request.on_lost = None
            gone = request.lost
        if gone:
            return _CLIENT_CLOSED, sent
        request.finish()
        return head.status, sent

    async def _hold(self, info: RouteInfo, watch: ServiceWatch, label: str, avoid: set[str]) -> bool:
        """Wait (bounded) for an instance that can be tried, asking the scheduler for one meanwhile."""
        settings = self.settings
        if watch.holders >= settings.hold_queue:
            self.metrics.held_outcomes.labels(label, "queue_full").inc()
            return False
        watch.holders += 1
        gauge = self.metrics.held.labels(label)
        gauge.inc()
        try:
            deadline = time.monotonic() + settings.hold_timeout
            while True:
                now = time.monotonic()
                usable = [u for u in watch.upstreams if u.key not in avoid and u.cooldown_until <= now]
                if usable:
                    self.metrics.held_outcomes.labels(label, "served").inc()
                    return True
                if now >= deadline:
                    self.metrics.held_outcomes.labels(label, "timeout").inc()
                    return False
                self._wake(info.chute_id)
                cooling = [u.cooldown_until for u in watch.upstreams if u.key not in avoid]
                wake_up = min([deadline, now + settings.wake_interval, *cooling])
                await watch.wait_changed(max(0.01, wake_up - now))
                # After a wait, an instance that failed this call may be back under the same id (Nomad restarts
                # a task in its allocation; Consul may never have shown it failing): avoiding it for good held
                # the call until the hold timeout. Attempts stay bounded by max_attempts.
                avoid.clear()
        finally:
            watch.holders -= 1
            gauge.dec()

    def _wake(self, chute_id: str) -> None:
        """Ask the scheduler for an instance, at most once per ``wake_interval`` per chute, in the background."""
        now = time.monotonic()
        if now - self._last_wake.get(chute_id, -1e9) < self.settings.wake_interval:
            return
        self._last_wake[chute_id] = now

        async def wake() -> None:
            try:
                await self.scheduler.wake(chute_id)
            except Exception as exc:
                log.warning("asking the scheduler to wake chute %s failed: %r", chute_id, exc)

        task = asyncio.create_task(wake(), name=f"wake:{chute_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _error(self, call: Call, failed: _Failed) -> int:
        headers = [_JSON_TYPE, (_INVOCATION_ID, call.invocation_id.encode())]
        if failed.retry_after is not None:
            headers.append((b"retry-after", str(failed.retry_after).encode()))
        call.request.respond(failed.status, header_lines(headers), json_error_body(failed.detail, failed.hint))
        return failed.status


class _Exchange:
    """A call's first exchange, begun by ``Proxy.start`` and followed from the connection's callbacks: an
    answer is relayed, metered and the connection released right there (a short one in one write; a stream
    piece by piece, each read from the instance written to the client at once, reading paused while the
    client's connection is full); before the answer starts, anything else (429/503 to retry elsewhere, a
    failure, the client gone) is handed to ``Proxy.forward``, which goes on in a task."""

    __slots__ = (
        "bytes_in", "call", "conn", "draining", "head", "over", "proxy", "recorder", "sent", "started_at", "up",
    )  # fmt: skip

    def __init__(
        self, proxy: Proxy, call: Call, recorder: InvocationRecorder, up: Upstream, conn: Connection, bytes_in: int
    ) -> None:
        self.proxy = proxy
        self.call = call
        self.recorder = recorder
        self.up = up
        self.conn = conn
        self.bytes_in = bytes_in
        self.started_at = time.time()
        self.head: Head | None = None  # set once the answer has started towards the client
        self.sent = 0
        self.draining = False  # waiting for the client's connection to drain
        self.over = False  # relayed and recorded (or handed over)

    def progress(self, conn: Connection) -> None:
        """The connection parsed more of the answer, failed or closed (its listener while set)."""
        try:
            if self.over:
                return
            if self.head is not None:
                self._stream(conn)
                return
            head = conn.head
            if conn.error is None and not conn.closed:
                if head is None:
                    return  # the head is still coming
                if head.status not in _RETRY_STATUSES and not self.call.request.lost:
                    length = head.content_length
                    if length is None or length > self.proxy.settings.buffer_limit:
                        self._start_stream(conn, head)
                    elif conn.complete:
                        self._answer(conn, head)
                    return  # the rest of a short body is coming
            self._hand_over()
        except Exception:
            log.exception("gateway: unhandled error relaying an answer for %s", self.call.route.label)
            conn.listener = None
            conn.close()
            self.call.request.proto.close_quietly()

    def _client_headers(self, head: Head) -> bytes:
        call = self.call
        if len(call.cords) > 1:
            call.content_type = _content_type(head)
        return client_response_head(head.headers, call.invocation_id.encode())

    def _start_stream(self, conn: Connection, head: Head) -> None:
        request = self.call.request
        self.head = head
        # The head and what has come of the body so far (an event stream's first frame) go out in one write.
        first = conn.take_body()
        request.start(head.status, self._client_headers(head), head.content_length, first)
        self.sent = len(first)
        request.on_lost = conn.close  # a client that goes away closes the instance's connection
        self._stream(conn)

    def _stream(self, conn: Connection) -> None:
        request = self.call.request
        proto = request.proto
        if proto.drain is not None:  # the client reads slower: wait (the connection pauses past its buffer)
            if not request.lost:
                if not self.draining:
                    self.draining = True
                    proto.drain.add_done_callback(lambda _: self._drained(conn))
                return
        elif conn.has_body():
            chunk = conn.take_body()
            request.send(chunk)
            self.sent += len(chunk)
        if conn.complete:
            self._done(conn, self.head.status if self.head is not None else 500)
            request.finish()
        elif conn.error is not None or conn.closed:
            if request.lost:
                self._done(conn, _CLIENT_CLOSED)
                return
            # The answer has started: its status cannot change any more. Cutting the client's connection
            # makes the answer truncated, never a clean end.
            label = self.call.route.label
            self.proxy.metrics.upstream_errors.labels(label, "stream").inc()
            log.warning("instance stream for %s broke after %d bytes: %s", label, self.sent, conn.error)
            self._done(conn, self.head.status if self.head is not None else 500)
            request.finished = True
            proto.close_quietly()

    def _drained(self, conn: Connection) -> None:
        self.draining = False
        self.progress(conn)

    def _done(self, conn: Connection, status: int) -> None:
        self.over = True
        conn.listener = None
        self.call.request.on_lost = None
        self.up.in_flight -= 1
        self.proxy.pool.release(conn)
        self.proxy._record(self.call, self.recorder, status, self.bytes_in, self.sent, self.started_at)

    def _answer(self, conn: Connection, head: Head) -> None:
        self.over = True
        conn.listener = None
        proxy, call, request = self.proxy, self.call, self.call.request
        request.on_lost = None
        data = conn.take_body()
        headers = self._client_headers(head)
        self.up.in_flight -= 1
        proxy.pool.release(conn)  # first: a pipelined call served next may take it
        request.respond(head.status, headers, data)
        proxy._record(call, self.recorder, head.status, self.bytes_in, len(data), self.started_at)

    def _hand_over(self) -> None:
        self.over = True
        self.conn.listener = None
        self.call.request.on_lost = None
        request = self.call.request
        request.proto.serve(request, self.proxy.forward(self.call, self.recorder, self, self.started_at))


def _content_type(head: Head) -> bytes | None:
    return next((v for n, v in head.headers if n.lower() == b"content-type"), None)


def _signer(route: Route) -> Signer:
    return route.signer if route.signer is not None else Signer(route.info.invoke_secret)
