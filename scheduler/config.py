"""Scheduler configuration: one typed value built from the environment, then overridden by command-line flags.

Environment variables follow the names that Nomad's and Consul's own tools use (``NOMAD_ADDR``,
``CONSUL_HTTP_ADDR``, ...) so that a scheduler started beside a real cluster finds it without flags.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chutes.core.errors import HintedError
from chutes.core.settings import Settings, setting

# auto: docker for a chute with a built image, raw_exec otherwise; raw_exec or docker: always that driver.
TaskDriver = Literal["auto", "raw_exec", "docker"]

DEFAULT_MAX_BUNDLE_BYTES = 50 * 1024 * 1024


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "chutes-scheduler"


class ConfigError(HintedError, ValueError):
    """A configuration value that cannot work; the message names the variable or flag to fix."""


class SchedulerConfig(BaseModel):
    """Everything one scheduler process needs to know; immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = setting("127.0.0.1", env="CHUTES_SCHEDULER_HOST", flag="--host", doc="address to bind")
    port: int = setting(
        8700, env="CHUTES_SCHEDULER_PORT", flag="--port", ge=0, le=65535, doc="port to bind; `0` picks a free one"
    )
    port_file: Path | None = setting(None, flag="--port-file", doc="the bound port is written there once serving")
    public_url: str | None = setting(
        None,
        env="CHUTES_PUBLIC_URL",
        flag="--public-url",
        shown_default="the bound address",
        doc="what instances use to download their bundle: must be reachable from GPU hosts",
    )
    data_dir: Path = setting(
        default_factory=default_data_dir,
        env="CHUTES_DATA_DIR",
        flag="--data-dir",
        shown_default="`$XDG_DATA_HOME/chutes-scheduler`",
        doc="holds the SQLite database by default",
    )
    database_url: str | None = setting(
        None,
        env="CHUTES_DATABASE_URL",
        flag="--database-url",
        shown_default="`sqlite+aiosqlite:///<data dir>/scheduler.db`",
        doc="or `postgresql+asyncpg://user:pass@host/db`",
    )
    nomad_addr: str = setting("http://127.0.0.1:4646", env="NOMAD_ADDR", flag="--nomad-addr", doc="Nomad's HTTP API")
    nomad_token: str | None = setting(None, env="NOMAD_TOKEN", doc="Nomad ACL token")
    nomad_namespace: str | None = setting(None, env="NOMAD_NAMESPACE", doc="Nomad namespace of the chute jobs")
    nomad_region: str | None = setting(None, env="NOMAD_REGION", doc="Nomad region")
    consul_addr: str = setting(
        "http://127.0.0.1:8500",
        env="CONSUL_HTTP_ADDR",
        flag="--consul-addr",
        doc="Consul's HTTP API; `host:port` is accepted",
    )
    consul_token: str | None = setting(None, env="CONSUL_HTTP_TOKEN", doc="Consul ACL token")
    task_driver: TaskDriver = setting(
        "auto",
        env="CHUTES_TASK_DRIVER",
        flag="--task-driver",
        doc="chute jobs' Nomad driver: `auto` = `docker` for a chute with a built image (by digest), `raw_exec` "
        "otherwise; `docker` always; `raw_exec` always, for trusted hosts only (see cluster.md)",
    )
    container_scheduler_host: str | None = setting(
        None,
        env="CHUTES_CONTAINER_SCHEDULER_HOST",
        flag="--container-scheduler-host",
        doc="the host name containers reach this scheduler by, replacing the public URL's host in docker tasks' "
        "`CHUTES_SCHEDULER_URL` (`chutes dev` sets `host.containers.internal`: its scheduler listens on loopback)",
    )
    datacenters: tuple[str, ...] = setting(
        ("dc1",), env="CHUTES_DATACENTERS", flag="--datacenters", doc="Nomad datacenters of chute jobs, comma-separated"
    )
    admin_key: str | None = setting(
        None, env="CHUTES_ADMIN_KEY", doc="bootstrap an admin with this key at start (idempotent)"
    )
    admin_username: str = setting(
        "admin",
        env="CHUTES_ADMIN_USERNAME",
        flag="--username",
        doc="the bootstrap admin's (and `create-admin`'s) username",
    )
    secrets_key: str | None = setting(
        None,
        env="CHUTES_SECRETS_KEY",
        repr=False,
        doc="seals chutes' secrets at rest (AES-256-GCM): 32 bytes, URL-safe base64 (`chutes-scheduler secrets-key`); "
        "the same on every scheduler of one database",
    )
    runtime_python: str | None = setting(
        None, env="CHUTES_RUNTIME_PYTHON", doc="the interpreter raw_exec instances run (`chutes dev` sets its own)"
    )
    max_bundle_bytes: int = setting(
        DEFAULT_MAX_BUNDLE_BYTES, env="CHUTES_MAX_BUNDLE_BYTES", ge=1024, doc="largest accepted bundle, bytes"
    )
    bundle_versions_kept: int = Field(3, ge=1)
    # Control loops: only the leader runs them (Consul session lock ``leader_key``).
    leader_key: str = "chutes/scheduler/leader"
    # Consul takes session TTLs of 10 s to 24 h; the devcluster allows shorter ones for tests.
    leader_ttl_s: float = setting(
        15.0,
        env="CHUTES_LEADER_TTL",
        flag="--leader-ttl",
        gt=0.0,
        le=86400.0,
        doc="TTL of the leader lock's Consul session, seconds",
    )
    # Kept short: a leader that cannot renew steps down within 0.8×TTL, before its session can expire.
    leader_lock_delay_s: float = setting(
        1.0, env="CHUTES_LEADER_LOCK_DELAY", ge=0.0, le=60.0, doc="lock delay of the leader lock's session, seconds"
    )
    reconcile_interval_s: float = setting(
        10.0, env="CHUTES_RECONCILE_INTERVAL", flag="--reconcile-interval", gt=0, doc="seconds between reconciler ticks"
    )
    check_interval_s: int = setting(
        1,
        env="CHUTES_CHECK_INTERVAL",
        flag="--check-interval",
        ge=1,
        le=3600,
        doc="seconds between Consul's checks of each instance's `/_ready`: bounds cold start and how soon a dead "
        "instance stops getting calls; raise it on very large fleets",
    )
    healthy_deadline_s: int = setting(
        1800,
        env="CHUTES_HEALTHY_DEADLINE",
        flag="--healthy-deadline",
        ge=11,  # above the rollout's 10 s min_healthy_time
        le=86400,
        doc="how long a new instance of a rollout has to pass its checks, seconds (Nomad's `update.healthy_deadline`; "
        "first starts may download weights); the rollout fails when no instance made progress for as long again "
        "(at most 10 min more: `progress_deadline`), and is then reported as a `failed` event",
    )
    loop_max_backoff_s: float = Field(60.0, gt=0)
    deploy_watch_s: float = setting(
        600.0,
        env="CHUTES_DEPLOY_WATCH",
        ge=0,
        doc="how long a deploy watches its allocations for progress events, seconds",
    )
    view_wait_s: float = setting(
        30.0,
        env="CHUTES_VIEW_WAIT",
        gt=0,
        le=600,
        doc="how long each blocking query of the cluster view waits for a change, seconds",
    )
    view_max_age_s: float = setting(
        10.0,
        env="CHUTES_VIEW_MAX_AGE",
        ge=0,
        doc="a cluster view whose sources have failed for longer than this is not trusted: placement and the API "
        "read the cluster once instead, seconds",
    )
    watch_interval_s: float = setting(
        1.0, env="CHUTES_WATCH_INTERVAL", gt=0, doc="how often a deploy watches its allocations, seconds"
    )
    run_loops: bool = setting(
        True,
        env="CHUTES_RUN_LOOPS",
        flag="--no-loops",
        const=False,
        doc="off (`--no-loops`): API only, never campaigns for leadership",
    )
    dev_adopt_users: bool = setting(
        False,
        env="CHUTES_DEV_ADOPT_USERS",
        flag="--dev-adopt-users",
        const=True,
        doc="dev stacks only (`chutes dev` turns it on): a chute whose username is not the caller's deploys for a "
        "local user of that name, shared with the caller as its adopter; never on a real cluster",
    )
    deploy_register_delay_s: float = setting(
        0.0,
        env="CHUTES_DEPLOY_REGISTER_DELAY",
        ge=0,
        doc="crash tests only: pause between storing a deploy and registering its job, seconds",
    )
    log_level: str = setting("info", env="CHUTES_LOG_LEVEL", flag="--log-level", doc="debug, info, warning")
    auth_failure_burst: int = setting(
        20,
        env="CHUTES_AUTH_FAILURE_BURST",
        ge=1,
        doc="failed key or token lookups an address may make at once (then 429)",
    )
    auth_failure_rate: float = setting(
        1.0, env="CHUTES_AUTH_FAILURE_RATE", gt=0, doc="failed lookups an address may make per second after the burst"
    )
    max_json_depth: int = setting(
        64,
        env="CHUTES_MAX_JSON_DEPTH",
        ge=1,
        le=512,
        doc="JSON bodies and manifests nested deeper are refused with 422",
    )
    gateway_url: str | None = setting(
        None,
        env="CHUTES_GATEWAY_URL",
        flag="--gateway-url",
        doc='the gateway the dashboard\'s "try a cord" form calls, as the signed-in user',
    )
    ui_session_ttl_s: int = setting(
        8 * 3600, env="CHUTES_UI_SESSION_TTL", ge=60, le=7 * 86400, doc="how long a dashboard sign-in lasts, seconds"
    )
    metrics_token: str | None = setting(
        None,
        env="CHUTES_METRICS_TOKEN",
        min_length=16,
        doc="a bearer token (16+ characters) that may read `GET /metrics`, for Prometheus",
    )
    reservation_ttl_s: float = setting(
        60.0,
        env="CHUTES_RESERVATION_TTL",
        gt=0,
        le=3600,
        doc="GPUs promised to a deploy stay reserved until Nomad places the instance, at most this long, seconds",
    )
    # The autoscaler (scheduler/autoscale.py) and metering loops.
    autoscale_interval_s: float = setting(
        10.0,
        env="CHUTES_AUTOSCALE_INTERVAL",
        gt=0,
        doc="autoscaler: seconds between evaluations, also the short window",
    )
    autoscale_long_window_s: float = setting(
        300.0, env="CHUTES_AUTOSCALE_LONG_WINDOW", gt=0, doc="autoscaler: the long window, seconds"
    )
    autoscale_down_delay_s: float = setting(
        120.0,
        env="CHUTES_AUTOSCALE_DOWN_DELAY",
        ge=0,
        doc="autoscaler: no scale-down this soon after a change (s)",
    )
    autoscale_down_ratio: float = setting(
        0.8, env="CHUTES_AUTOSCALE_DOWN_RATIO", gt=0, doc="autoscaler: scale down only below `scaling_threshold ×` this"
    )
    autoscale_report_max_age_s: float = setting(
        15.0,
        env="CHUTES_AUTOSCALE_REPORT_MAX_AGE",
        gt=0,
        doc="autoscaler: a gateway's utilisation report counts this long after it arrived (s); a gateway silent for "
        "longer is ignored",
    )
    metering_interval_s: float = setting(
        15.0,
        env="CHUTES_METERING_INTERVAL",
        gt=0,
        doc="how often instance records become GPU-time rows, seconds (`GET /v1/usage` counts running instances "
        "up to the moment it answers either way)",
    )
    invalidation_key: str = setting(
        "chutes/gateway/invalidations",
        env="CHUTES_INVALIDATION_KEY",
        doc="Consul KV key of the access-change notices the gateways follow (theirs must match)",
    )
    # Image builds (docs/images.md). No registry: builds are off (the API answers 409 with this hint).
    registry: str | None = setting(
        None,
        env="CHUTES_REGISTRY",
        doc="image builds (docs/images.md): the registry images are pushed to, `host[:port][/path]`; unset: builds "
        "are off (`POST /v1/images` answers 409 with a hint)",
    )
    registry_tls_verify: bool = setting(
        True, env="CHUTES_REGISTRY_TLS_VERIFY", doc="`false` for a plain-HTTP registry (`chutes dev`'s loopback one)"
    )
    registry_auth_file: Path | None = setting(
        None,
        env="CHUTES_REGISTRY_AUTH_FILE",
        doc="a containers `auth.json` for the registry, whose contents reach build tasks through their Nomad Variable",
    )
    build_ca_bundle: str | None = setting(
        None,
        env="CHUTES_BUILD_CA_BUNDLE",
        doc="a CA bundle (on the builder nodes) mounted read-only into RUN steps, for TLS-intercepting proxies",
    )
    build_timeout_s: int = setting(
        1800, env="CHUTES_BUILD_TIMEOUT", ge=30, le=24 * 3600, doc="a build's time limit, seconds"
    )
    max_context_bytes: int = setting(
        DEFAULT_MAX_BUNDLE_BYTES,
        env="CHUTES_MAX_CONTEXT_BYTES",
        ge=1024,
        doc="the largest build context (content, uncompressed), bytes",
    )
    max_concurrent_builds: int = setting(
        2, env="CHUTES_MAX_CONCURRENT_BUILDS", ge=1, le=100, doc="builds under way per user (past it 429)"
    )
    builder_node_meta: str = setting(
        "chutes_builder=true",
        env="CHUTES_BUILDER_NODE_META",
        doc="where build jobs run: nodes with this meta (`KEY=VALUE`; empty: no meta constraint)",
    )
    builder_node_class: str | None = setting(
        None, env="CHUTES_BUILDER_NODE_CLASS", doc="where build jobs run: nodes of this class (with the meta above)"
    )
    build_isolation: Literal["oci", "chroot", "rootless"] = setting(
        "oci", env="CHUTES_BUILD_ISOLATION", doc="buildah's `--isolation` for RUN steps: `oci`, `rootless` or `chroot`"
    )

    @field_validator("nomad_addr", "consul_addr")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value:
            raise ValueError("address is empty")
        if "://" not in value:
            value = f"http://{value}"  # CONSUL_HTTP_ADDR is commonly given as host:port
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"CHUTES_PUBLIC_URL {value!r} must start with http:// or https://")
        return value

    @field_validator("gateway_url")
    @classmethod
    def _gateway(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"CHUTES_GATEWAY_URL {value!r} must start with http:// or https://")
        return value

    @field_validator("registry", "build_ca_bundle", "builder_node_class")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip().rstrip("/") if value and value.strip() else None

    @field_validator("builder_node_meta")
    @classmethod
    def _node_meta(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}=[^\s$]{1,128}", value):
            raise ValueError(f"{value!r} is not KEY=VALUE (e.g. chutes_builder=true), or empty for any node")
        return value

    @field_validator("datacenters", mode="before")
    @classmethod
    def _datacenters(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not value:
            raise ValueError("at least one datacenter is needed")
        return tuple(value)

    @field_validator("container_scheduler_host")
    @classmethod
    def _container_host(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]", value):
            raise ValueError(f"{value!r} is not a host name or address")
        return value

    def container_url(self, public_url: str) -> str | None:
        """``public_url`` with its host replaced by ``container_scheduler_host`` (None when that is unset)."""
        if self.container_scheduler_host is None:
            return None
        parts = urlsplit(public_url)
        netloc = self.container_scheduler_host + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'scheduler.db'}"

    def resolved_public_url(self, bound_port: int | None = None) -> str:
        """What instances use to reach this scheduler; defaults to the bound address."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{bound_port or self.port}"


#: The scheduler's settings (every field declared with ``setting``): flags, variables and docs come from it.
SETTINGS = Settings.from_model("chutes-scheduler", SchedulerConfig)
# Environment variable → field. Flags (cli.py) override these.
ENV_VARS: dict[str, str] = SETTINGS.env_vars()


def load_config(env: Mapping[str, str] | None = None, **overrides: Any) -> SchedulerConfig:
    """Build the configuration from ``env`` (default: the process environment), then ``overrides``.

    Overrides whose value is None are ignored, so that unset command-line flags keep the environment's value.
    Raises ConfigError naming the variable when a value is invalid.
    """
    env = os.environ if env is None else env
    values, source = SETTINGS.from_env(env)
    for field, value in overrides.items():
        if value is not None:
            values[field] = value
            declared = SETTINGS.by_name.get(field)
            source[field] = (declared.flag if declared else None) or f"--{field.replace('_', '-')}"
    try:
        return SchedulerConfig(**values)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        if callable(errors):
            parts = []
            for err in errors():
                field = str(err["loc"][0]) if err.get("loc") else "?"
                parts.append(f"{source.get(field, field)}: {err['msg']}")
            raise ConfigError("invalid configuration: " + "; ".join(parts)) from None
        raise ConfigError(f"invalid configuration: {exc}") from None
