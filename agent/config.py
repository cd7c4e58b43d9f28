"""The agent's configuration: flags over the usual environment variables, validated once at startup."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from chutes.core.errors import HintedError

from .sources.simulated import SimSpec


class ConfigError(HintedError, ValueError):
    """A setting that cannot work; the message names the flag or variable to fix."""


@dataclass(frozen=True, slots=True)
class Address:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_address(value: str, default_port: int, what: str) -> Address:
    """``http://host:port``, ``https://host``, ``host:port`` or ``host`` (as Consul's and Nomad's CLIs take them)."""
    text = value.strip()
    if not text:
        raise ConfigError(f"{what} is empty")
    parts = urlsplit(text if "//" in text else f"//{text}")
    scheme = parts.scheme or "http"
    if scheme not in ("http", "https"):
        raise ConfigError(f"{what}={value!r}: the scheme must be http or https")
    try:
        explicit = parts.port
    except ValueError:
        raise ConfigError(f"{what}={value!r}: the port is not a number between 0 and 65535") from None
    if not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"{what}={value!r}: expected [http[s]://]host[:port]")
    port = explicit if explicit is not None else (443 if scheme == "https" else default_port)
    return Address(scheme, parts.hostname, port)


def consul_duration(seconds: float) -> str:
    """Seconds as a Go duration string, which is what Consul's check fields take ("15s", "1m0s" → "60s")."""
    if seconds >= 1 and math.isclose(seconds, round(seconds)):
        return f"{round(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True, slots=True)
class Intervals:
    """Timings of the daemon, in seconds (defaults from the node inventory contract)."""

    heartbeat: float = 5.0
    ttl: float = 15.0
    deregister_after: float = 60.0
    kv_refresh: float = 60.0
    probe: float = 10.0
    backoff_cap: float = 30.0

    def validate(self) -> None:
        for name in ("heartbeat", "ttl", "deregister_after", "kv_refresh", "probe", "backoff_cap"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive number of seconds")
        if self.heartbeat >= self.ttl:
            raise ConfigError(
                f"--heartbeat ({self.heartbeat:g}s) must be shorter than --ttl ({self.ttl:g}s), "
                "or the check turns critical between two heartbeats"
            )


@dataclass(frozen=True, slots=True)
class AgentConfig:
    node_id: str | None  # None: resolve from Nomad, else the hostname
    hostname: str
    consul: Address
    consul_token: str | None = None
    nomad: Address | None = None
    nomad_token: str | None = None
    nomad_node_id: str | None = None
    simulate: list[SimSpec] = field(default_factory=list)
    simulate_file: Path | None = None
    intervals: Intervals = field(default_factory=Intervals)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    ports_file: Path | None = None


def env(name: str) -> str | None:
    """An environment variable, with empty meaning unset."""
    value = os.environ.get(name, "").strip()
    return value or None
