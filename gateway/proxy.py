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
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from chutes.gateway.balancer import NoUpstream, Upstream, choose
from chutes.gateway.config import GatewaySettings
from chutes.gateway.discovery import ConsulDiscovery, ServiceWatch
from chutes.gateway.headers import INVOCATION_ID_HEADER, client_response_headers, upstream_request_headers
from chutes.gateway.metrics import GatewayMetrics
from chutes.gateway.routes import Identity, Route, RouteInfo, pick_cord
from chutes.gateway.scheduler_client import SchedulerAPI
from chutes.manifest import CordSpec
from chutes.signing import sign

if TYPE_CHECKING:
    from chutes.gateway.metering import InvocationRecorder

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({429, 503})


@dataclass(slots=True)
class Call:
    """One authorised call to one cord (or to a stream/non-stream pair, settled once the body is read)."""

    request: web.Request
    route: Route
    cords: tuple[CordSpec, ...]
    caller: Identity
    invocation_id: str
    started: float  # perf_counter() when the request arrived


class _Failed(Exception):
    """An answer the gateway makes itself (no instance, too large, timed out)."""

    def __init__(self, status: int, detail: str, hint: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.hint = hint
        self.retry_after = retry_after


class Proxy:
    """Sends calls to instances over one shared keep-alive connection pool."""

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
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        self._last_wake: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,  # bytes pass through as the instance encoded them
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(self, call: Call, recorder: InvocationRecorder) -> web.StreamResponse:
        """Serve ``call`` from an instance and record it; never raises for an instance's failure."""
        info = call.route.info
        label = f"{info.username}/{info.name}"
        started_at = time.time()
        status, bytes_in, bytes_out = 500, 0, 0
        cord = call.cords[0]
        try:
            body = await self._read_body(call.request)
            bytes_in = len(body)
            query = call.request.rel_url.raw_query_string
            cord = pick_cord(call.cords, body, query)
            response, bytes_out = await self._send(call, cord, query, label, body)
            status = response.status
            return response
        except _Failed as failed:
            status = failed.status
            return self._error(call, failed)
        finally:
            elapsed = time.perf_counter() - call.started
            self.metrics.observe(label, cord.name, status, elapsed)
            recorder.record(
                {
                    "invocation_id": call.invocation_id,
                    "chute_id": info.chute_id,
                    "caller": call.caller.user_id,
                    "cord": cord.name,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "started_at": started_at,
                }
            )

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _Failed(413, f"request body over {limit} bytes", "send a smaller body")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Failed(413, f"request body over {limit} bytes", "send a smaller body") from None

    async def _send(
        self, call: Call, cord: CordSpec, query: str, label: str, body: bytes
    ) -> tuple[web.StreamResponse, int]:
        settings = self.settings
        info = call.route.info
        target = cord.public_api_path + ("?" + query if query else "")
        method = cord.public_api_method
        watch = self.discovery.watch(info.service)
        if not watch.loaded.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.loaded.wait(), settings.first_table_wait)
        avoid: set[str] = set()
        attempts = busy = unreachable = 0
        while True:
            choice = choose(watch.upstreams, info.concurrency, time.monotonic(), avoid)
            if isinstance(choice, NoUpstream):
                if choice is NoUpstream.BUSY or (busy and not unreachable):
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
                raise _Failed(status, f"{attempts} instances of chute {info.name!r} could not take the call", None,
                              retry_after)  # fmt: skip
            if attempts:
                self.metrics.retries.labels(label, "busy" if busy else "unreachable").inc()
            attempts += 1
            choice.in_flight += 1
            try:
                outcome = await self._attempt(call, choice, method, target, body, label)
            finally:
                choice.in_flight -= 1
            if isinstance(outcome, tuple):
                return outcome
            avoid.add(choice.key)
            if outcome == 429:
                busy += 1
            else:
                unreachable += 1

    async def _attempt(
        self, call: Call, up: Upstream, method: str, target: str, body: bytes, label: str
    ) -> tuple[web.StreamResponse, int] | int:
        """One exchange with one instance: the relayed answer, or the status that says "try another"."""
        assert self._session is not None, "Proxy.start() was not awaited"
        request = call.request
        headers = upstream_request_headers(
            request.headers.items(),
            client_ip=request.remote,
            host=request.host,
            scheme=request.scheme,
            invocation_id=call.invocation_id,
            signature=sign(call.route.info.invoke_secret, method, target, body),
        )
        url = URL(up.origin + target, encoded=True)
        try:
            resp = await self._session.request(method, url, data=body, headers=headers, allow_redirects=False)
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # Refused, reset or dropped before any answer: the instance is gone or going; nothing was relayed.
            kind = "connect" if isinstance(exc, aiohttp.ClientConnectorError) else "disconnect"
            self.metrics.upstream_errors.labels(label, kind).inc()
            up.cooldown_until = time.monotonic() + self.settings.cooldown
            log.info("instance %s of %s failed before answering (%r): trying another", up.key, label, exc)
            return 503
        except TimeoutError as exc:
            self.metrics.upstream_errors.labels(label, "timeout").inc()
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                up.cooldown_until = time.monotonic() + self.settings.cooldown
                return 503
            raise _Failed(504, "the instance did not answer in time", None) from exc
        except aiohttp.ClientError as exc:
            self.metrics.upstream_errors.labels(label, "protocol").inc()
            raise _Failed(502, f"bad answer from the instance: {exc}", None) from exc
        try:
            if resp.status in _RETRY_STATUSES:
                self.metrics.upstream_errors.labels(label, str(resp.status)).inc()
                if resp.status == 503:  # draining or not ready yet: it will say so to the next call too
                    up.cooldown_until = time.monotonic() + self.settings.cooldown
                return resp.status
            return await self._relay(call, resp, label)
        finally:
            resp.release()

    async def _relay(self, call: Call, resp: aiohttp.ClientResponse, label: str) -> tuple[web.StreamResponse, int]:
        headers = CIMultiDict(client_response_headers(resp.headers.items()))
        headers[INVOCATION_ID_HEADER] = call.invocation_id
        length = resp.content_length
        if length is not None and length <= self.settings.buffer_limit:
            try:
                data = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.metrics.upstream_errors.labels(label, "read").inc()
                raise _Failed(502, f"the instance failed while answering: {exc!r}", None) from exc
            return web.Response(status=resp.status, reason=resp.reason, body=data, headers=headers), len(data)
        out = web.StreamResponse(status=resp.status, reason=resp.reason, headers=headers)
        if length is not None:
            out.content_length = length
        await out.prepare(call.request)
        sent = 0
        try:
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
                sent += len(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The answer has started: its status cannot change any more. Cut the client's connection so
            # that it sees a truncated answer, never a clean end.
            self.metrics.upstream_errors.labels(label, "stream").inc()
            log.warning("instance stream for %s broke after %d bytes: %r", label, sent, exc)
            transport = call.request.transport
            if transport is not None:
                transport.abort()
            return out, sent
        await out.write_eof()
        return out, sent

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

    def _error(self, call: Call, failed: _Failed) -> web.Response:
        headers = {INVOCATION_ID_HEADER: call.invocation_id}
        if failed.retry_after is not None:
            headers["Retry-After"] = str(failed.retry_after)
        body = json.dumps({"detail": failed.detail, "hint": failed.hint})
        return web.Response(status=failed.status, text=body, content_type="application/json", headers=headers)
