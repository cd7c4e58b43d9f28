"""Prometheus metrics of one instance (names fixed in docs/internal-contracts.md, "Gateway → instance").

``chutes_in_flight`` and ``chutes_concurrency_limit`` (gauges), ``chutes_requests_total{cord,status}``
(counter), ``chutes_request_duration_seconds{cord}`` (histogram). (The autoscaler does not read them: the
gateways report the load they route, ``chutes.scheduler.utilisation``.)

Every update happens on the event loop thread, so the hot path adds to plain ints and floats (no locks, no
label lookups); ``collect`` turns them into metric families when ``/_metrics`` is scraped. Each runtime owns
its registry, so several runtimes in one process (tests) do not share counters.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from chutes.runtime.limiter import ConcurrencyLimiter

# GPU work runs from milliseconds (embeddings) to the 1800 s default cord timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0


class RuntimeMetrics(Collector):
    """The instance's metrics; ``render()`` is the body of ``/_metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, limiter: ConcurrencyLimiter) -> None:
        self._limiter = limiter
        self._requests: dict[tuple[str, int], int] = {}
        self._durations: dict[str, _Histogram] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def count(self, cord: str, status: int) -> None:
        key = (cord, status)
        self._requests[key] = self._requests.get(key, 0) + 1

    def observe(self, cord: str, status: int, seconds: float) -> None:
        """One admitted call finished."""
        self.count(cord, status)
        histogram = self._durations.get(cord)
        if histogram is None:
            histogram = self._durations[cord] = _Histogram()
        histogram.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        histogram.total += seconds

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("chutes_in_flight", "Cord calls in flight", value=self._limiter.in_flight)
        yield GaugeMetricFamily(
            "chutes_concurrency_limit", "Most cord calls in flight at once", value=self._limiter.limit
        )
        requests = CounterMetricFamily(
            "chutes_requests", "Cord calls by cord and HTTP status", labels=["cord", "status"]
        )
        for (cord, status), value in sorted(self._requests.items()):
            requests.add_metric([cord, str(status)], value)
        yield requests
        durations = HistogramMetricFamily(
            "chutes_request_duration_seconds", "Duration of admitted cord calls", labels=["cord"]
        )
        for cord, histogram in sorted(self._durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), histogram.counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            durations.add_metric([cord], buckets, histogram.total)
        yield durations

    def render(self) -> bytes:
        return generate_latest(self.registry)
