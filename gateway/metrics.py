"""The gateway's Prometheus metrics, in a registry of its own (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    """Requests by chute, cord and status; latency; retries; upstream errors; held calls; metering drops."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "chutes_gateway_requests",
            "Calls answered, by chute, cord and status",
            ["chute", "cord", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "chutes_gateway_request_duration_seconds",
            "Time from receiving a call to its last byte sent, by chute and cord",
            ["chute", "cord"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
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
        # Label children looked up once per label set: the hot path then costs a dict lookup and an add.
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._latency: dict[tuple[str, str], Histogram] = {}

    def observe(self, chute: str, cord: str, status: int, seconds: float) -> None:
        """Count one answered call and its duration."""
        key = (chute, cord, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(chute, cord, str(status))
        counter.inc()
        lkey = (chute, cord)
        hist = self._latency.get(lkey)
        if hist is None:
            hist = self._latency[lkey] = self.latency.labels(chute, cord)
        hist.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
