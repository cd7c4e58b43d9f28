"""Prometheus metrics of one instance (names fixed in docs/internal-contracts.md, "Gateway → instance").

Each runtime owns its registry, so several runtimes in one process (tests) do not share counters. Label
children are cached because ``.labels()`` costs a dict build and a lock on every call.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from chutes.runtime.limiter import ConcurrencyLimiter

# GPU work runs from milliseconds (embeddings) to the 1800 s default cord timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class RuntimeMetrics:
    """``chutes_in_flight``, ``chutes_concurrency_limit``, ``chutes_last_request_timestamp_seconds``,
    ``chutes_requests_total{cord,status}``, ``chutes_request_duration_seconds{cord}``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, limiter: ConcurrencyLimiter) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        in_flight = Gauge("chutes_in_flight", "Cord calls in flight", registry=self.registry)
        in_flight.set_function(lambda: limiter.in_flight)
        limit = Gauge("chutes_concurrency_limit", "Most cord calls in flight at once", registry=self.registry)
        limit.set(limiter.limit)
        self._last = Gauge(
            "chutes_last_request_timestamp_seconds",
            "Unix time of the last cord call admitted or finished",
            registry=self.registry,
        )
        self._requests = Counter(
            "chutes_requests", "Cord calls by cord and HTTP status", ["cord", "status"], registry=self.registry
        )
        self._duration = Histogram(
            "chutes_request_duration_seconds",
            "Duration of admitted cord calls",
            ["cord"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._counter_children: dict[tuple[str, int], MetricWrapperBase] = {}
        self._histogram_children: dict[str, MetricWrapperBase] = {}

    def touch(self) -> None:
        """A cord call was admitted or finished: the instance is not idle."""
        self._last.set(time.time())

    def count(self, cord: str, status: int) -> None:
        child = self._counter_children.get((cord, status))
        if child is None:
            child = self._counter_children[(cord, status)] = self._requests.labels(cord=cord, status=str(status))
        child.inc()  # type: ignore[attr-defined]

    def observe(self, cord: str, status: int, seconds: float) -> None:
        """One admitted call finished."""
        self.count(cord, status)
        child = self._histogram_children.get(cord)
        if child is None:
            child = self._histogram_children[cord] = self._duration.labels(cord=cord)
        child.observe(seconds)  # type: ignore[attr-defined]
        self.touch()

    def render(self) -> bytes:
        return generate_latest(self.registry)
