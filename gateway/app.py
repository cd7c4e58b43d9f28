"""The gateway's HTTP server: authenticate, resolve the chute and cord, then hand the call to the proxy.

Served by the gateway's own HTTP/1.1 server (``server.py``: asyncio protocols, httptools, uvloop): nothing
between the parser and the proxy. The scheduler is consulted through caches and Consul through discovery watches,
so an ordinary call costs no lookup beyond dictionaries in memory.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from chutes.core.edge.throttle import FailureThrottle
from chutes.gateway.allocations import NomadAllocations
from chutes.gateway.cache import TTLCache
from chutes.gateway.config import GatewaySettings
from chutes.gateway.discovery import ConsulDiscovery, HealthSource
from chutes.gateway.invalidation import GatewayCaches, InvalidationFollower, KVSource, key_alias
from chutes.gateway.metering import InvocationRecorder, InvocationSpool
from chutes.gateway.metrics import GatewayMetrics
from chutes.gateway.proxy import Call, Proxy, new_invocation_id
from chutes.gateway.routes import Identity, Route, Target, parse_target
from chutes.gateway.scheduler_client import SchedulerAPI, SchedulerUnavailable
from chutes.gateway.server import Incoming, header_lines, json_error_body
from chutes.gateway.utilisation import UtilisationReporter

log = logging.getLogger(__name__)

_API_KEY = re.compile(rb"cnk_[A-Za-z0-9_-]{43}")
_JSON_TYPE = (b"content-type", b"application/json")
_INVOCATION_ID = b"x-chutes-invocation-id"
_UNPARSED: Any = object()
_TARGETS_KEPT = 4096
_KEYS_KEPT = 4096


def send_error(
    request: Incoming,
    status: int,
    detail: str,
    hint: str | None = None,
    invocation_id: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A JSON error answer ``{"detail", "hint"}`` carrying the invocation id."""
    out = [_JSON_TYPE, *(headers or [])]
    if invocation_id is not None:
        out.append((_INVOCATION_ID, invocation_id.encode()))
    request.respond(status, header_lines(out), json_error_body(detail, hint))


def api_key_of(authorization: bytes | None) -> str | None:
    """The API key in ``Authorization: Bearer <key>`` (a bare key is accepted too), if it has the key format.

    Keys are ``cnk_`` and 43 URL-safe characters (docs/internal-contracts.md): anything else is refused here,
    so made-up keys cost the scheduler nothing.
    """
    if not authorization:
        return None
    scheme, _, rest = authorization.partition(b" ")
    key = rest.strip() if scheme.lower() == b"bearer" else authorization.strip()
    if not _API_KEY.fullmatch(key):
        return None
    return key.decode("ascii")


class Gateway:
    """The state shared by every call: caches, discovery, the proxy, metering and metrics."""

    def __init__(
        self, settings: GatewaySettings, scheduler: SchedulerAPI, health: HealthSource, kv: KVSource | None = None
    ) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.metrics = GatewayMetrics()
        self.allocations = (
            None
            if settings.nomad_addr is None
            else NomadAllocations(
                settings.nomad_addr, settings.nomad_token, namespace=settings.nomad_namespace,
                ttl=settings.allocation_ttl,
            )
        )  # fmt: skip
        self.discovery = ConsulDiscovery(
            health, wait=settings.consul_wait, idle_after=settings.watch_idle, verify=self.allocations
        )
        self.identities: TTLCache[str, Identity] = TTLCache(
            self._authenticate, settings.auth_ttl, settings.auth_negative_ttl, settings.stale_for, alias=key_alias
        )
        self.throttle = FailureThrottle(settings.auth_failure_burst, settings.auth_failure_rate)
        self.routes: TTLCache[tuple[str, str], Route] = TTLCache(
            self._load_route, settings.route_ttl, settings.route_negative_ttl, settings.stale_for
        )
        self.follower: InvalidationFollower | None = None
        if kv is not None and settings.invalidation_key:
            caches = GatewayCaches(self.routes, self.identities, self.metrics)
            self.follower = InvalidationFollower(
                kv, settings.invalidation_key, caches.apply, caches.reset, wait=settings.consul_wait
            )
        self.recorder = InvocationRecorder(
            scheduler.report_invocations,
            interval=settings.metering_interval,
            batch_size=settings.metering_batch,
            max_pending=settings.metering_max_pending,
            dropped=self.metrics.invocations_dropped,
            sent=self.metrics.invocations_sent,
            spool=InvocationSpool(settings.spool_dir) if settings.spool_dir else None,
            reporter=UtilisationReporter(lambda: self.discovery.watches),
        )
        self.proxy = Proxy(settings, self.discovery, self.metrics, scheduler)
        self._targets: dict[tuple[bytes, str], Target | None] = {}
        # Authorization header -> the API key in it, for well-formed keys (pure: parsed once per header value)
        self._keys: dict[bytes, str] = {}

    async def _authenticate(self, key: str) -> Identity | None:
        identity = await self.scheduler.authenticate(key)
        if identity is not None:
            self.throttle.accepted(key)  # it passes a throttled address's gate (the cache still decides)
        else:
            self.throttle.rejected(key)
        return identity

    async def _load_route(self, key: tuple[str, str]) -> Route | None:
        info = await self.scheduler.route(*key)
        return None if info is None else Route.of(info)

    async def start(self) -> None:
        self.recorder.start()
        if self.follower is not None:
            self.follower.start()

    async def close(self) -> None:
        if self.follower is not None:
            await self.follower.close()
        await self.recorder.close()
        await self.proxy.close()
        await self.discovery.close()
        if self.allocations is not None:
            await self.allocations.close()

    async def resolve(self, target: Target) -> Route | None:
        """The route of the chute ``target`` addresses: the candidate that names a chute and (for a host
        address) owns the host label. Deploys are refused when a label could name two chutes, so at most one
        candidate answers."""
        for key in target.candidates:
            route = await self.routes.get(key)
            if route is not None and route.answers(target):
                return route
        return None

    def serve_now(self, request: Incoming) -> bool:
        """Serve a call without a task when everything it needs is in memory: a known address, a cached API
        key and route that allow it, and (``Proxy.start``) an idle connection to an instance that can take it.
        False: nothing was done and ``handle`` serves the request (every miss and every refusal goes there)."""
        if self.throttle:
            return False
        target = self._targets.get((request.host, request.path))
        if target is None or target is _UNPARSED:
            return False
        authorization = request.header(b"authorization")
        if authorization is None:
            return False
        key = self._keys.get(authorization)
        if key is None:
            key = api_key_of(authorization)
            if key is None:
                return False
            if len(self._keys) >= _KEYS_KEPT:  # bounded: many keys only cost parsing them again
                self._keys.clear()
            self._keys[authorization] = key
        known = self.identities.peek(key)
        caller = None if known is None else known.value
        if caller is None:
            return False
        for candidate in target.candidates:
            entry = self.routes.peek(candidate)
            if entry is None:
                return False
            route = entry.value
            if route is not None and route.answers(target):
                break
        else:
            return False
        if not route.allows(caller):
            return False
        cords = route.cords_at(request.method, target.path)
        if cords is None:
            return False
        call = Call(request, route, cords, caller, new_invocation_id(), time.perf_counter())
        return self.proxy.start(call, self.recorder)

    async def handle(self, request: Incoming) -> None:
        """Every request: gateway endpoints, then chute calls."""
        started = time.perf_counter()
        settings = self.settings
        # Parsed once per address: a busy chute's calls all name the same host and path.
        address = (request.host, request.path)
        target = self._targets.get(address, _UNPARSED)
        if target is _UNPARSED:
            target = parse_target(request.host.decode("latin-1"), request.path, settings.domain)
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()  # bounded: a client sending many addresses only costs re-parsing
            self._targets[address] = target
        invocation_id = new_invocation_id()
        if target is None:
            await self._own_endpoint(request, invocation_id)
            return
        key = api_key_of(request.header(b"authorization"))
        client = request.client_ip
        if self.throttle:  # some address failed lately: it may not make the scheduler look up unknown keys
            retry_after = self.throttle.gate(client, key)
            if retry_after is not None:
                self.metrics.observe("", "", 429, time.perf_counter() - started)
                send_error(
                    request, 429, "too many failed authentications from this address",
                    "check the API key; retry after the time in Retry-After", invocation_id,
                    [(b"retry-after", str(retry_after).encode())],
                )  # fmt: skip
                return
        try:
            caller = None if key is None else await self.identities.get(key)
            if caller is None:
                self.throttle.failed(client)
                self.metrics.observe("", "", 401, time.perf_counter() - started)
                send_error(
                    request, 401, "missing or invalid API key",
                    "send 'Authorization: Bearer <api key>'; create a key with 'chutes keys create'",
                    invocation_id, [(b"www-authenticate", b"Bearer")],
                )  # fmt: skip
                return
            if self.throttle and key is not None:  # a token taken at a suspect address's gate goes back
                self.throttle.accepted(key, client)
            route = await self.resolve(target)
        except SchedulerUnavailable as exc:
            log.warning("scheduler unavailable: %s", exc)
            self.metrics.observe("", "", 503, time.perf_counter() - started)
            send_error(
                request, 503, "the platform's control plane is unavailable", "retry shortly", invocation_id,
                [(b"retry-after", str(settings.retry_after_unavailable).encode())],
            )  # fmt: skip
            return
        if route is None or not route.allows(caller):
            self.metrics.observe("", "", 404, time.perf_counter() - started)
            send_error(request, 404, "no such chute", "check the username and chute name in the URL", invocation_id)
            return
        cords = route.cords_at(request.method, target.path)
        if cords is None:
            self.metrics.observe("", "", 404, time.perf_counter() - started)
            available = ", ".join(f"{m} {p}" for m, p in sorted(route.cords)) or "none"
            send_error(
                request, 404, f"chute {route.info.name!r} has no cord at {request.method} {target.path}",
                f"its cords: {available}", invocation_id,
            )  # fmt: skip
            return
        await self.proxy.forward(Call(request, route, cords, caller, invocation_id, started), self.recorder)

    async def _own_endpoint(self, request: Incoming, invocation_id: str) -> None:
        path, method = request.path, request.method
        if path == "/healthz" and method in ("GET", "HEAD"):
            body = json.dumps({"status": "ok", "watches": len(self.discovery.watches)}).encode()
            request.respond(200, header_lines([_JSON_TYPE]), body)
        elif path == "/metrics" and method == "GET":
            self.metrics.watches.set(len(self.discovery.watches))
            following = self.follower is not None and self.follower.healthy
            self.metrics.invalidations_following.set(1 if following else 0)
            content_type = header_lines([(b"content-type", self.metrics.content_type.encode())])
            request.respond(200, content_type, self.metrics.render())
        else:
            send_error(
                request, 404, "not a chute address",
                "call /<username>/<chute-slug>/<path> or https://<username>-<chute-slug>.<domain>/<path>",
                invocation_id,
            )  # fmt: skip
