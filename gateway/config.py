"""The gateway's settings: one frozen dataclass, filled from flags and the environment by ``chutes.gateway.cli``."""

from __future__ import annotations

from dataclasses import dataclass, field

from chutes.edge.limits import EdgeLimits


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Every knob of the gateway, with production defaults; tests shorten the intervals."""

    scheduler_url: str
    scheduler_key: str
    consul_addr: str = "http://127.0.0.1:8500"
    consul_token: str | None = None
    #: wildcard domain for ``<username>-<slug>.<domain>`` addresses; None: path addresses only
    domain: str | None = None

    # Caches in front of the scheduler (seconds).
    auth_ttl: float = 30.0
    auth_negative_ttl: float = 5.0
    route_ttl: float = 10.0
    route_negative_ttl: float = 2.0
    stale_for: float = 300.0  # serve a cached key or route this long past its TTL while the scheduler is down
    # Consul KV key of the scheduler's access-change notices (None: rely on the TTLs alone).
    invalidation_key: str | None = "chutes/gateway/invalidations"

    # Calls to instances.
    max_body_bytes: int = 50 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 1800.0  # longest silence from an instance (the runtime's cord timeout is 1800 s)
    max_attempts: int = 4  # instances tried per call (429, refused connection, draining)
    cooldown: float = 2.0  # an instance that refused a connection is skipped this long
    buffer_limit: int = 256 * 1024  # answers with a known length up to this size are sent in one write
    upstream_idle_timeout: float = 4.0  # keep idle connections to instances below uvicorn's 5 s keep-alive

    # Scale from zero.
    hold_timeout: float = 120.0  # how long a call waits for a first instance
    hold_queue: int = 256  # calls held per chute at most; more get 503 at once
    wake_interval: float = 5.0  # re-ask the scheduler for an instance this often while calls are held
    first_table_wait: float = 2.0  # the first call to a chute waits this long for Consul's first answer

    # Discovery.
    consul_wait: str = "30s"
    watch_idle: float = 600.0  # stop watching a chute not called for this long

    # Metering.
    metering_interval: float = 1.0
    metering_batch: int = 500
    metering_max_pending: int = 100_000
    # Invocation records are journalled here until the scheduler has them (None: memory only, lost on a crash).
    spool_dir: str | None = None

    # Answers.
    retry_after_busy: int = 1
    retry_after_unavailable: int = 5

    # The edge: limits per client connection (chutes.edge), failed authentications per client address.
    limits: EdgeLimits = field(default_factory=EdgeLimits)
    auth_failure_burst: int = 10  # failed authentications an address may make at once ...
    auth_failure_rate: float = 1.0  # ... and per second after that; past it: 429 without a key lookup

    # Instances are checked against Nomad's allocations when set (docs/security.md); None: every passing
    # Consul registration of a chute's service gets calls.
    nomad_addr: str | None = None
    nomad_token: str | None = None
    nomad_namespace: str | None = None
    allocation_ttl: float = 5.0
