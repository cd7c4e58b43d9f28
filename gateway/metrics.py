"""The gateway's Prometheus metrics, in a registry of its own (served at ``/metrics``)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class CallStats:
    """Calls by chute, cord and status and their durations, counted in plain dicts on the hot path (no lock,
    no label lookup per call) and exported as ``chutes_gateway_requests_total`` and
    ``chutes_gateway_request_duration_seconds`` when ``/metrics`` is scraped."""

    _BOUNDS = [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]  # as prometheus_client writes ``le``

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        # per (chute, cord): a count per bucket (the last one +Inf), then the sum of the durations
        self.latency: dict[tuple[str, str], list[float]] = {}

    def observe(self, chute: str, cord: str, status: int, seconds: float) -> None:
        key = (chute, cord, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        counts = self.latency.get((chute, cord))
        if counts is None:
            counts = self.latency[(chute, cord)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "chutes_gateway_requests", "Calls answered, by chute, cord and status", labels=["chute", "cord", "status"]
        )
        for (chute, cord, status), count in list(self.requests.items()):
            requests.add_metric([chute, cord, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "chutes_gateway_request_duration_seconds",
            "Time from receiving a call to its last byte sent, by chute and cord",
            labels=["chute", "cord"],
        )
        for (chute, cord), counts in list(self.latency.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip(self._BOUNDS, counts[:-1], strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            latency.add_metric([chute, cord], buckets, counts[-1])
        yield latency


class GatewayMetrics:
    """Requests by chute, cord and status; latency; retries; upstream errors; held calls; metering drops."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = CallStats()
        r.register(self.calls)
        self.retries = Counter(
            "chutes_gateway_retries", "Calls sent on to another instance, by chute and reason", ["chute", "reason"],
            registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "chutes_gateway_upstream_errors", "Failed exchanges with instances, by chute and kind", ["chute", "kind"],
            registry=r,
        )  # fmt: skip
        self.held = Gauge("chutes_gateway_held_requests", "Calls waiting for a first instance", ["chute"], registry=r)
        self.held_outcomes = Counter(
            "chutes_gateway_held", "Calls that had to wait for an instance, by outcome", ["chute", "outcome"],
            registry=r,
        )  # fmt: skip
        self.watches = Gauge("chutes_gateway_consul_watches", "Chute services watched in Consul", registry=r)
        self.invocations_dropped = Counter(
            "chutes_gateway_invocations_dropped", "Invocation records dropped because the queue was full", registry=r
        )
        self.invocations_sent = Counter(
            "chutes_gateway_invocations_reported", "Invocation records sent to the scheduler", registry=r
        )
        self.invalidations = Counter(
            "chutes_gateway_invalidations",
            "Cache entries dropped on the scheduler's access-change notices, by cache (route, identity)",
            ["cache"],
            registry=r,
        )
        self.invalidation_lag = Histogram(
            "chutes_gateway_invalidation_lag_seconds",
            "Time from the scheduler publishing an access change to this gateway applying it",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.cache_resets = Counter(
            "chutes_gateway_cache_resets", "Times every cached route and identity was dropped (notices missed)",
            registry=r,
        )  # fmt: skip
        self.invalidations_following = Gauge(
            "chutes_gateway_invalidations_following", "1 while the gateway follows the notices in Consul", registry=r
        )
        self.observe = self.calls.observe  # count one answered call and its duration

    def render(self) -> bytes:
        return generate_latest(self.registry)
