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

    host: str = "127.0.0.1"
    port: int = Field(8700, ge=0, le=65535)
    port_file: Path | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    public_url: str | None = None
    nomad_addr: str = "http://127.0.0.1:4646"
    nomad_token: str | None = None
    nomad_namespace: str | None = None
    nomad_region: str | None = None
    consul_addr: str = "http://127.0.0.1:8500"
    consul_token: str | None = None
    task_driver: TaskDriver = "auto"
    # The host name containers reach this scheduler by, when the public URL's host is not reachable from inside
    # a container (a loopback address in `chutes dev`: podman names the host's loopback host.containers.internal).
    container_scheduler_host: str | None = None
    datacenters: tuple[str, ...] = ("dc1",)
    admin_key: str | None = None
    admin_username: str = "admin"
    # Seals chute secrets at rest (32 bytes, URL-safe base64); every scheduler of one store needs the same key.
    secrets_key: str | None = Field(None, repr=False)
    runtime_python: str | None = None
    max_bundle_bytes: int = Field(DEFAULT_MAX_BUNDLE_BYTES, ge=1024)
    bundle_versions_kept: int = Field(3, ge=1)
    # Control loops: only the leader runs them (Consul session lock ``leader_key``).
    leader_key: str = "chutes/scheduler/leader"
    # Consul takes session TTLs of 10 s to 24 h; the devcluster allows shorter ones for tests.
    leader_ttl_s: float = Field(15.0, gt=0.0, le=86400.0)
    # Kept short: a leader that cannot renew steps down within 0.8×TTL, before its session can expire.
    leader_lock_delay_s: float = Field(1.0, ge=0.0, le=60.0)
    reconcile_interval_s: float = Field(10.0, gt=0)
    # Consul checks /_ready of every instance this often: it bounds how soon a new instance gets traffic
    # (cold start) and how soon a dead one stops getting it. Raise it on very large fleets.
    check_interval_s: int = Field(1, ge=1, le=3600)
    loop_max_backoff_s: float = Field(60.0, gt=0)
    # How long a deploy request keeps watching its new version's allocations for progress events.
    deploy_watch_s: float = Field(600.0, ge=0)
    watch_interval_s: float = Field(1.0, gt=0)
    run_loops: bool = True
    # `chutes dev` only: a chute whose username is not the caller's is deployed for a local user of that name
    # (created when missing, and the chute shared with the caller). A real cluster keeps refusing it.
    dev_adopt_users: bool = False
    # Fault injection for crash tests only: pause between storing a deploy and registering its job.
    deploy_register_delay_s: float = Field(0.0, ge=0)
    log_level: str = "info"
    # Failed authentications per client address: a burst, then this many per second; past it 429.
    auth_failure_burst: int = Field(20, ge=1)
    auth_failure_rate: float = Field(1.0, gt=0)
    # JSON bodies (and the manifest) nested deeper than this are refused with 422 before they are parsed.
    max_json_depth: int = Field(64, ge=1, le=512)
    # The dashboard (/ui): where its "try a cord" form sends calls (the gateway, with the user's key), and how
    # long a sign-in lasts.
    gateway_url: str | None = None
    ui_session_ttl_s: int = Field(8 * 3600, ge=60, le=7 * 86400)
    # GET /metrics also accepts this bearer token (for Prometheus), besides admin and gateway keys.
    metrics_token: str | None = Field(None, min_length=16)
    # GPUs promised to a deploy stay reserved until Nomad places the instance, or this long at most.
    reservation_ttl_s: float = Field(60.0, gt=0, le=3600)
    # Consul KV key where access and routing changes are announced to the gateways.
    invalidation_key: str = "chutes/gateway/invalidations"

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


# Environment variable → field. Flags (cli.py) override these.
ENV_VARS: dict[str, str] = {
    "CHUTES_SCHEDULER_HOST": "host",
    "CHUTES_SCHEDULER_PORT": "port",
    "CHUTES_DATA_DIR": "data_dir",
    "CHUTES_DATABASE_URL": "database_url",
    "CHUTES_PUBLIC_URL": "public_url",
    "NOMAD_ADDR": "nomad_addr",
    "NOMAD_TOKEN": "nomad_token",
    "NOMAD_NAMESPACE": "nomad_namespace",
    "NOMAD_REGION": "nomad_region",
    "CONSUL_HTTP_ADDR": "consul_addr",
    "CONSUL_HTTP_TOKEN": "consul_token",
    "CHUTES_TASK_DRIVER": "task_driver",
    "CHUTES_CONTAINER_SCHEDULER_HOST": "container_scheduler_host",
    "CHUTES_DATACENTERS": "datacenters",
    "CHUTES_ADMIN_KEY": "admin_key",
    "CHUTES_ADMIN_USERNAME": "admin_username",
    "CHUTES_SECRETS_KEY": "secrets_key",
    "CHUTES_RUNTIME_PYTHON": "runtime_python",
    "CHUTES_MAX_BUNDLE_BYTES": "max_bundle_bytes",
    "CHUTES_LEADER_TTL": "leader_ttl_s",
    "CHUTES_LEADER_LOCK_DELAY": "leader_lock_delay_s",
    "CHUTES_RECONCILE_INTERVAL": "reconcile_interval_s",
    "CHUTES_CHECK_INTERVAL": "check_interval_s",
    "CHUTES_DEPLOY_WATCH": "deploy_watch_s",
    "CHUTES_WATCH_INTERVAL": "watch_interval_s",
    "CHUTES_RUN_LOOPS": "run_loops",
    "CHUTES_DEV_ADOPT_USERS": "dev_adopt_users",
    "CHUTES_DEPLOY_REGISTER_DELAY": "deploy_register_delay_s",
    "CHUTES_LOG_LEVEL": "log_level",
    "CHUTES_AUTH_FAILURE_BURST": "auth_failure_burst",
    "CHUTES_AUTH_FAILURE_RATE": "auth_failure_rate",
    "CHUTES_MAX_JSON_DEPTH": "max_json_depth",
    "CHUTES_GATEWAY_URL": "gateway_url",
    "CHUTES_UI_SESSION_TTL": "ui_session_ttl_s",
    "CHUTES_METRICS_TOKEN": "metrics_token",
    "CHUTES_RESERVATION_TTL": "reservation_ttl_s",
    "CHUTES_INVALIDATION_KEY": "invalidation_key",
}


def load_config(env: Mapping[str, str] | None = None, **overrides: Any) -> SchedulerConfig:
    """Build the configuration from ``env`` (default: the process environment), then ``overrides``.

    Overrides whose value is None are ignored, so that unset command-line flags keep the environment's value.
    Raises ConfigError naming the variable when a value is invalid.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for var, field in ENV_VARS.items():
        raw = env.get(var)
        if raw is not None and raw != "":
            values[field] = raw
            source[field] = var
    for field, value in overrides.items():
        if value is not None:
            values[field] = value
            source[field] = f"--{field.replace('_', '-')}"
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
