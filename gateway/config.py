"""The gateway's settings: one frozen dataclass, filled from flags and the environment by ``chutes.gateway.cli``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chutes.core.edge.limits import EdgeLimits
from chutes.core.settings import Setting, Settings

_CONSUL = "http://127.0.0.1:8500"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Every knob of the gateway, with production defaults; tests shorten the intervals."""

    scheduler_url: str
    scheduler_key: str
    consul_addr: str = _CONSUL
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
    # Records are sent once this many are queued (else every metering_interval): each send costs the gateway
    # a few hundred microseconds, so at 10k calls/s a batch of 2000 sends 5 times a second rather than 20. The
    # scheduler takes up to 10,000 records a batch.
    metering_batch: int = 2000
    metering_max_pending: int = 100_000
    # Invocation records are journalled here until the scheduler has them (None: memory only, lost on a crash).
    spool_dir: str | None = None

    # Answers.
    retry_after_busy: int = 1
    retry_after_unavailable: int = 5

    # The edge: limits per client connection (chutes.core.edge), failed authentications per client address.
    limits: EdgeLimits = field(default_factory=EdgeLimits)
    auth_failure_burst: int = 10  # failed authentications an address may make at once ...
    auth_failure_rate: float = 1.0  # ... and per second after that; past it: 429 without a key lookup

    # Instances are checked against Nomad's allocations when set (docs/security.md); None: every passing
    # Consul registration of a chute's service gets calls.
    nomad_addr: str | None = None
    nomad_token: str | None = None
    nomad_namespace: str | None = None
    allocation_ttl: float = 5.0


#: The command line's settings (``chutes-gateway --help`` and docs/configuration.md come from here); the
#: dataclass above keeps the knobs that only tests and embedders set.
SETTINGS = Settings(
    "chutes-gateway",
    [
        Setting("host", "address to bind", env="CHUTES_GATEWAY_HOST", flag="--host", default="0.0.0.0"),
        Setting(
            "port",
            "port to bind; `0` picks a free one",
            env="CHUTES_GATEWAY_PORT",
            flag="--port",
            parse=int,
            shown_default="`$NOMAD_PORT_http`, else `8080`",
        ),
        Setting("port_file", "the bound port is written there once listening", flag="--port-file", parse=Path),
        Setting(
            "scheduler_url",
            "the scheduler's URL",
            env="CHUTES_SCHEDULER_URL",
            flag="--scheduler-url",
            default="http://127.0.0.1:8700",
        ),
        Setting(
            "gateway_key",
            "the gateway's own API key: a key with the `gateway` role (or an admin key); required",
            env="CHUTES_GATEWAY_KEY",
            flag="--gateway-key",
            old_flags=("--scheduler-key",),
        ),
        Setting("consul_addr", "Consul's HTTP API", env="CONSUL_HTTP_ADDR", flag="--consul-addr", default=_CONSUL),
        Setting("consul_token", "Consul ACL token", env="CONSUL_HTTP_TOKEN", flag="--consul-token"),
        Setting(
            "domain",
            "wildcard domain for `<username>-<chute>.<domain>` addresses",
            env="CHUTES_GATEWAY_DOMAIN",
            flag="--domain",
        ),
        Setting("auth_ttl", "seconds an API key's answer is cached", flag="--auth-ttl", default=30.0, parse=float),
        Setting("route_ttl", "seconds a route is cached", flag="--route-ttl", default=10.0, parse=float),
        Setting(
            "hold_timeout",
            "seconds a call waits for a first instance",
            flag="--hold-timeout",
            default=120.0,
            parse=float,
        ),
        Setting("hold_queue", "calls held per chute at most", flag="--hold-queue", default=256, parse=int),
        Setting(
            "wake_interval",
            "seconds between asks for an instance while calls are held",
            flag="--wake-interval",
            default=5.0,
            parse=float,
        ),
        Setting("max_body_mb", "largest request body, MiB", flag="--max-body-mb", default=50.0, parse=float),
        Setting("max_attempts", "instances tried per call", flag="--max-attempts", default=4, parse=int),
        Setting(
            "read_timeout",
            "longest silence from an instance, seconds",
            flag="--read-timeout",
            default=1800.0,
            parse=float,
        ),
        Setting(
            "watch_idle",
            "stop watching a chute in Consul after this many seconds without calls",
            flag="--watch-idle",
            default=600.0,
            parse=float,
        ),
        Setting(
            "metering_interval",
            "seconds between sends of invocation records to the scheduler",
            flag="--metering-interval",
            default=1.0,
            parse=float,
        ),
        Setting(
            "nomad_addr",
            "check instances against Nomad's allocations (recommended; unset: any passing registration gets calls)",
            env="NOMAD_ADDR",
            flag="--nomad-addr",
        ),
        Setting("nomad_token", "a Nomad token with read-job", env="NOMAD_TOKEN", flag="--nomad-token"),
        Setting(
            "nomad_namespace", "Nomad namespace of the chute jobs", env="NOMAD_NAMESPACE", flag="--nomad-namespace"
        ),
        Setting(
            "auth_failure_burst",
            "failed authentications an address may make at once (then 429)",
            env="CHUTES_AUTH_FAILURE_BURST",
            flag="--auth-failure-burst",
            default=10,
            parse=int,
        ),
        Setting(
            "auth_failure_rate",
            "failed authentications per second an address may make after the burst",
            env="CHUTES_AUTH_FAILURE_RATE",
            flag="--auth-failure-rate",
            default=1.0,
            parse=float,
        ),
        Setting(
            "spool_dir",
            "journal invocation records here until the scheduler has them (replayed after a crash)",
            env="CHUTES_GATEWAY_SPOOL_DIR",
            flag="--spool-dir",
            parse=Path,
            shown_default="none (memory only)",
        ),
        Setting(
            "invalidation_key",
            "Consul KV key of the scheduler's access-change notices (`''` relies on the TTLs alone)",
            env="CHUTES_INVALIDATION_KEY",
            flag="--invalidation-key",
            default="chutes/gateway/invalidations",
        ),
        Setting("access_log", "log every request", flag="--access-log", const=True, default=False),
        Setting("log_level", "log level", env="CHUTES_LOG_LEVEL", flag="--log-level", default="INFO"),
    ],
)
