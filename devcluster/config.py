"""The devcluster's configuration and the ``NAME=MODEL:COUNT`` node specs of its command line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chutes import gpus

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)=(?:(?P<model>[A-Za-z0-9_]+):(?P<count>\d+))?$")


class ConfigError(ValueError):
    """A command-line value the devcluster cannot use; the message says how to fix it."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    model: str | None
    count: int


def parse_node_spec(text: str) -> NodeSpec:
    """``gpu-a=h100_sxm:8`` (or ``cpu-1=`` for a node without GPUs)."""
    m = _SPEC.match(text.strip())
    if m is None:
        raise ConfigError(f"bad node spec {text!r}: use NAME=MODEL:COUNT, e.g. gpu-a=h100_sxm:8 (or NAME= for no GPUs)")
    model, count = m.group("model"), int(m.group("count") or 0)
    if model is not None:
        try:
            gpu = gpus.get(model)
        except gpus.UnknownGPUError:
            raise ConfigError(f"unknown GPU model {model!r} in {text!r}; known: {', '.join(gpus.all_ids())}") from None
        if not gpu.schedulable:
            raise ConfigError(f"GPU model {model!r} is not reported by NVML and cannot be simulated")
    if count > 64:
        raise ConfigError(f"{text!r}: at most 64 GPUs per node")
    return NodeSpec(m.group("name"), model if count else None, count)


def read_nodes_file(path: Path) -> list[NodeSpec]:
    """One ``NAME=MODEL:COUNT`` per line; blank lines and ``#`` comments are ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read nodes file {path}: {exc.strerror}") from None
    return [parse_node_spec(line) for line in lines if line.strip() and not line.strip().startswith("#")]


@dataclass
class DevclusterConfig:
    host: str = "127.0.0.1"
    nomad_port: int = 4646
    consul_port: int = 8500
    nodes: list[NodeSpec] = field(default_factory=list)
    local_node: bool = True
    local_node_name: str | None = None
    probe_gpus: bool = True
    data_dir: Path | None = None
    ports_file: Path | None = None
    #: ACLs on both APIs (default policy deny); also on when a management token below is given
    acl: bool = False
    #: management token secrets the operator chose (created at start if missing)
    nomad_token: str | None = None
    consul_token: str | None = None
    session_min_ttl_s: float = 10.0
    reap_interval_s: float = 0.25
    tls_cert: Path | None = None  # with tls_key: both APIs serve HTTPS
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # clients must present a certificate signed by this CA
    # The docker task driver (run with podman): auto = on when podman works, on = required, off = raw_exec only.
    docker_driver: Literal["auto", "on", "off"] = "auto"
    insecure_registries: tuple[str, ...] = ()  # host or host:port pulled without TLS verification

    @property
    def acl_enabled(self) -> bool:
        return self.acl or bool(self.nomad_token) or bool(self.consul_token)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"

    def validate(self) -> None:
        names = [n.name for n in self.nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"node name(s) given twice: {', '.join(dupes)}")
        if not self.nodes and not self.local_node:
            raise ConfigError("no nodes: give --node NAME=MODEL:COUNT or drop --no-local-node")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (client certificates need HTTPS)")
        if self.docker_driver not in ("auto", "on", "off"):
            raise ConfigError(f"docker driver mode {self.docker_driver!r}: use auto, on or off")
        for port in (self.nomad_port, self.consul_port):
            if not 0 <= port <= 65535:
                raise ConfigError(f"port {port} is out of range (0 picks a free port)")
