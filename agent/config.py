"""The agent's configuration: flags over the usual environment variables, validated once at startup."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from chutes.core.errors import HintedError
from chutes.core.settings import Setting, Settings

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


def seconds(text: str) -> float:
    """A positive number of seconds, from a flag."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def port(text: str) -> int:
    """A TCP port, 0 for any free one, from a flag."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is between 0 and 65535 (0: any free port)")
    return value


_D = Intervals()
#: The agent's settings; the flags of ``chutes-agent``, their --help and docs/configuration.md come from here.
SETTINGS = Settings(
    "chutes-agent",
    [
        Setting(
            "simulate",
            "simulate catalog GPUs instead of reading NVML, e.g. h100_sxm:8 (repeat for several groups)",
            env="CHUTES_AGENT_SIMULATE",
            flag="--simulate",
            metavar="MODEL[:COUNT]",
            multiple=True,
        ),
        Setting(
            "simulate_file",
            "simulate the GPUs described in a JSON/YAML file, re-read when it changes",
            env="CHUTES_AGENT_SIMULATE_FILE",
            flag="--simulate-file",
            parse=Path,
            metavar="PATH",
        ),
        Setting(
            "node_id",
            "this node's id",
            env="CHUTES_NODE_ID",
            flag="--node-id",
            shown_default="Nomad node name, else hostname",
        ),
        Setting("nomad_addr", "Nomad HTTP API; unset: no Nomad node meta", env="NOMAD_ADDR", flag="--nomad-addr"),
        Setting("nomad_token", "Nomad ACL token", env="NOMAD_TOKEN", flag="--nomad-token"),
        Setting(
            "nomad_node_id",
            "this host's Nomad node ID",
            env="CHUTES_NOMAD_NODE_ID",
            flag="--nomad-node-id",
            shown_default="looked up",
        ),
        # The Consul address also honours CONSUL_HTTP_SSL (chutes.core.cluster_tls.consul_address).
        Setting(
            "consul_addr",
            "Consul HTTP API",
            env="CONSUL_HTTP_ADDR",
            flag="--consul-addr",
            shown_default="127.0.0.1:8500",
        ),
        Setting("consul_token", "Consul ACL token", env="CONSUL_HTTP_TOKEN", flag="--consul-token"),
        Setting("heartbeat", "TTL check refresh, seconds", flag="--heartbeat", default=_D.heartbeat, parse=seconds),
        Setting("ttl", "TTL of the Consul checks, seconds", flag="--ttl", default=_D.ttl, parse=seconds),
        Setting(
            "deregister_after",
            "Consul removes the service after it is critical this long, seconds",
            flag="--deregister-after",
            default=_D.deregister_after,
            parse=seconds,
        ),
        Setting(
            "kv_refresh",
            "rewrite the KV inventory and Nomad meta at least this often, seconds",
            flag="--kv-refresh",
            default=_D.kv_refresh,
            parse=seconds,
        ),
        Setting(
            "probe_interval", "GPU reading period, seconds", flag="--probe-interval", default=_D.probe, parse=seconds
        ),
        Setting(
            "backoff_cap",
            "longest wait between retries to an unreachable Consul or Nomad, seconds",
            flag="--backoff-cap",
            default=_D.backoff_cap,
            parse=seconds,
        ),
        Setting(
            "metrics_port",
            "serve Prometheus metrics on this port (0: any free port)",
            flag="--metrics-port",
            parse=port,
        ),
        Setting("metrics_host", "address of the metrics server", flag="--metrics-host", default="127.0.0.1"),
        Setting(
            "ports_file", "write {pid, node_id, metrics} as JSON here once started", flag="--ports-file", parse=Path
        ),
        Setting(
            "log_level",
            "log level of `run`",
            flag="--log-level",
            default="INFO",
            choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        ),
    ],
)


def env(name: str) -> str | None:
    """An environment variable, with empty meaning unset."""
    value = os.environ.get(name, "").strip()
    return value or None
