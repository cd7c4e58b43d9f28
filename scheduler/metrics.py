"""The scheduler's Prometheus metrics, in a registry of its own (served at ``GET /metrics``, authenticated).

What an operator needs to see the control plane work: deploys and how they ended, placement decisions with
the reasons nodes were rejected, every leader loop's ticks, failures and durations, how long the store takes,
whether this scheduler leads, and the access-change notices it published for the gateways.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_STATEMENTS = ("select", "insert", "update", "delete")
_STARTED = "chutes_metrics_started"


class SchedulerMetrics:
    """Counters, gauges and histograms of one scheduler process."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.deploys = Counter(
            "chutes_scheduler_deploys", "Deploy requests that reached placement, by outcome (accepted, unschedulable, "
            "conflict, error)", ["outcome"], registry=r,
        )  # fmt: skip
        self.placements = Counter(
            "chutes_scheduler_placements",
            "Placement decisions by purpose (deploy, scale, autoscale, reconcile) and outcome (placed, partial, "
            "unschedulable)",
            ["purpose", "outcome"],
            registry=r,
        )
        self.rejections = Counter(
            "chutes_scheduler_placement_rejections",
            "Nodes rejected by placement decisions that could not place everything, by reason",
            ["reason"],
            registry=r,
        )
        self.reservations = Gauge(
            "chutes_scheduler_gpu_reservations", "GPUs promised to deploys that Nomad has not confirmed yet", registry=r
        )
        self.loop_ticks = Counter(
            "chutes_scheduler_loop_ticks", "Leader loop ticks by loop and outcome (ok, error)", ["loop", "outcome"],
            registry=r,
        )  # fmt: skip
        self.loop_duration = Histogram(
            "chutes_scheduler_loop_tick_duration_seconds", "Duration of leader loop ticks", ["loop"],
            buckets=TICK_BUCKETS, registry=r,
        )  # fmt: skip
        self.store_latency = Histogram(
            "chutes_scheduler_store_statement_duration_seconds",
            "Database statement latency by kind (select, insert, update, delete, other)",
            ["statement"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "chutes_scheduler_store_errors", "Database statements that raised", ["statement"], registry=r
        )
        self.leader = Gauge("chutes_scheduler_leader", "1 while this scheduler leads (runs the loops)", registry=r)
        self.leader_changes = Counter(
            "chutes_scheduler_leadership_changes", "Times this scheduler gained or lost leadership", ["change"],
            registry=r,
        )  # fmt: skip
        self.invalidations = Counter(
            "chutes_scheduler_invalidations_published",
            "Access and routing changes announced to gateways through Consul, by outcome (published, retried, failed)",
            ["outcome"],
            registry=r,
        )
        self.http_requests = Counter(
            "chutes_scheduler_http_requests", "API requests by method, route and status", ["method", "route", "status"],
            registry=r,
        )  # fmt: skip
        self.http_latency = Histogram(
            "chutes_scheduler_http_request_duration_seconds", "API request latency by method and route",
            ["method", "route"], buckets=HTTP_BUCKETS, registry=r,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- helpers used by the parts

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)
        self.leader_changes.labels("gained" if leading else "lost").inc()

    def tick(self, loop: str, seconds: float, ok: bool) -> None:
        self.loop_ticks.labels(loop, "ok" if ok else "error").inc()
        self.loop_duration.labels(loop).observe(seconds)

    def placement(self, purpose: str, wanted: int, placed: int, rejections: dict[str, int] | None) -> None:
        outcome = "placed" if placed >= wanted else ("partial" if placed else "unschedulable")
        self.placements.labels(purpose, outcome).inc()
        for reason, count in (rejections or {}).items():
            if count:
                self.rejections.labels(reason).inc(count)

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """Time every statement the store runs (SQLAlchemy cursor events on the sync engine underneath)."""
        sync_engine = engine.sync_engine

        def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
            conn.info.setdefault(_STARTED, []).append(time.perf_counter())

        def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
            stack = conn.info.get(_STARTED)
            if stack:
                self.store_latency.labels(_kind(statement)).observe(time.perf_counter() - stack.pop())

        def failed(context: Any) -> None:
            stack = context.connection.info.get(_STARTED) if context.connection is not None else None
            if stack:
                stack.pop()
            self.store_errors.labels(_kind(str(context.statement or ""))).inc()

        event.listen(sync_engine, "before_cursor_execute", before)
        event.listen(sync_engine, "after_cursor_execute", after)
        event.listen(sync_engine, "handle_error", failed)


def _kind(statement: str) -> str:
    head = statement.lstrip()[:6].lower()
    return head if head in _STATEMENTS else "other"


class RequestMetrics:
    """ASGI middleware counting API requests by method, matched route template and status."""

    def __init__(self, app: Any, metrics: SchedulerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router records the matched route in the scope: label by its template, never the raw path
            # (ids in paths would make one series per chute).
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_latency.labels(method, route).observe(time.perf_counter() - started)
