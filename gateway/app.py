"""The gateway's HTTP server: authenticate, resolve the chute and cord, then hand the call to the proxy.

aiohttp serves and calls (one stack, C-accelerated parsers, uvloop); the scheduler is consulted through
caches, Consul through discovery watches, so an ordinary call costs no lookup beyond dictionaries in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from chutes.gateway.cache import TTLCache
from chutes.gateway.config import GatewaySettings
from chutes.gateway.discovery import ConsulDiscovery, HealthSource
from chutes.gateway.headers import INVOCATION_ID_HEADER
from chutes.gateway.metering import InvocationRecorder
from chutes.gateway.metrics import GatewayMetrics
from chutes.gateway.proxy import Call, Proxy
from chutes.gateway.routes import Identity, Route, Target, parse_target
from chutes.gateway.scheduler_client import SchedulerAPI, SchedulerUnavailable

log = logging.getLogger(__name__)

_MAX_KEY_LENGTH = 256
_JSON = "application/json"


def error_response(
    status: int,
    detail: str,
    hint: str | None = None,
    invocation_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON error answer ``{"detail", "hint"}`` carrying the invocation id."""
    body = json.dumps({"detail": detail, "hint": hint})
    extra = dict(headers or {})
    if invocation_id is not None:
        extra[INVOCATION_ID_HEADER] = invocation_id
    return web.Response(status=status, text=body, content_type=_JSON, headers=extra)


def api_key_of(request: web.Request) -> str | None:
    """The API key in ``Authorization: Bearer <key>`` (a bare key is accepted too), if well-formed."""
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    key = rest.strip() if scheme.lower() == "bearer" else header.strip()
    if not key or len(key) > _MAX_KEY_LENGTH or not key.isascii() or any(c.isspace() for c in key):
        return None
    return key


class Gateway:
    """The state shared by every call: caches, discovery, the proxy, metering and metrics."""

    def __init__(self, settings: GatewaySettings, scheduler: SchedulerAPI, health: HealthSource) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.metrics = GatewayMetrics()
        self.discovery = ConsulDiscovery(health, wait=settings.consul_wait, idle_after=settings.watch_idle)
        self.identities: TTLCache[str, Identity] = TTLCache(
            scheduler.authenticate, settings.auth_ttl, settings.auth_negative_ttl, settings.stale_for
        )
        self.routes: TTLCache[tuple[str, str], Route] = TTLCache(
            self._load_route, settings.route_ttl, settings.route_negative_ttl, settings.stale_for
        )
        self.recorder = InvocationRecorder(
            scheduler.report_invocations,
            interval=settings.metering_interval,
            batch_size=settings.metering_batch,
            max_pending=settings.metering_max_pending,
            dropped=self.metrics.invocations_dropped,
            sent=self.metrics.invocations_sent,
        )
        self.proxy = Proxy(settings, self.discovery, self.metrics, scheduler)

    async def _load_route(self, key: tuple[str, str]) -> Route | None:
        info = await self.scheduler.route(*key)
        return None if info is None else Route.of(info)

    async def start(self) -> None:
        await self.proxy.start()
        self.recorder.start()

    async def close(self) -> None:
        await self.recorder.close()
        await self.proxy.close()
        await self.discovery.close()

    async def resolve(self, target: Target) -> Route | None:
        """The route of the first candidate (username, slug) that names a chute."""
        for key in target.candidates:
            route = await self.routes.get(key)
            if route is not None:
                return route
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Every request: gateway endpoints, then chute calls."""
        started = time.perf_counter()
        settings = self.settings
        target = parse_target(request.host, request.path, settings.domain)
        if target is None:
            return await self._own_endpoint(request)
        invocation_id = uuid.uuid4().hex
        key = api_key_of(request)
        try:
            caller = None if key is None else await self.identities.get(key)
            if caller is None:
                self.metrics.observe("", "", 401, time.perf_counter() - started)
                return error_response(
                    401,
                    "missing or invalid API key",
                    "send 'Authorization: Bearer <api key>'; create a key with 'chutes keys create'",
                    invocation_id,
                    {"WWW-Authenticate": "Bearer"},
                )
            route = await self.resolve(target)
        except SchedulerUnavailable as exc:
            log.warning("scheduler unavailable: %s", exc)
            self.metrics.observe("", "", 503, time.perf_counter() - started)
            return error_response(
                503, "the platform's control plane is unavailable", "retry shortly", invocation_id,
                {"Retry-After": str(settings.retry_after_unavailable)},
            )  # fmt: skip
        if route is None or not route.allows(caller):
            self.metrics.observe("", "", 404, time.perf_counter() - started)
            return error_response(404, "no such chute", "check the username and chute name in the URL", invocation_id)
        cords = route.cords_at(request.method, target.path)
        if cords is None:
            self.metrics.observe("", "", 404, time.perf_counter() - started)
            available = ", ".join(f"{m} {p}" for m, p in sorted(route.cords)) or "none"
            return error_response(
                404, f"chute {route.info.name!r} has no cord at {request.method} {target.path}",
                f"its cords: {available}", invocation_id,
            )  # fmt: skip
        call = Call(request, route, cords, caller, invocation_id, started)
        return await self.proxy.forward(call, self.recorder)

    async def _own_endpoint(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/healthz" and request.method in ("GET", "HEAD"):
            return web.json_response({"status": "ok", "watches": len(self.discovery.watches)})
        if path == "/metrics" and request.method == "GET":
            self.metrics.watches.set(len(self.discovery.watches))
            return web.Response(body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type})
        return error_response(
            404,
            "not a chute address",
            "call /<username>/<chute-slug>/<path> or https://<username>-<chute-slug>.<domain>/<path>",
        )


def build_app(gateway: Gateway) -> web.Application:
    """The aiohttp application serving ``gateway``; starts and stops its background work with the app."""
    app = web.Application(client_max_size=gateway.settings.max_body_bytes)
    app.router.add_route("*", "/{tail:.*}", gateway.handle)

    async def lifecycle(_app: web.Application) -> Any:
        await gateway.start()
        yield
        with contextlib.suppress(asyncio.CancelledError):
            await gateway.close()

    app.cleanup_ctx.append(lifecycle)
    return app
