"""Consul's records as the devcluster keeps them (internal values; the API renders Consul's JSON from them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
STATUSES = (PASSING, WARNING, CRITICAL)
DATACENTER = "dc1"
# The Consul release whose API the devcluster follows, as ``/v1/agent/self`` reports it (Nomad's Consul
# fingerprint parses Config.Version as semver).
CONSUL_VERSION = "1.20.1"
CONSUL_REVISION = "devcluster"
CONSUL_BUILD_DATE = "2024-10-28T00:00:00Z"


@dataclass
class CheckDefinition:
    """How a check is run: HTTP, TCP or TTL (script and gRPC checks are refused at registration)."""

    http: str | None = None
    method: str = "GET"
    header: dict[str, list[str]] = field(default_factory=dict)
    body: str | None = None
    tcp: str | None = None
    ttl_s: float | None = None
    interval_s: float | None = None
    timeout_s: float = 10.0
    deregister_after_s: float | None = None
    tls_skip_verify: bool = False
    success_before_passing: int = 0
    failures_before_critical: int = 0

    @property
    def kind(self) -> str:
        if self.ttl_s is not None:
            return "ttl"
        if self.http is not None:
            return "http"
        if self.tcp is not None:
            return "tcp"
        return ""


@dataclass
class Check:
    check_id: str
    name: str
    node: str
    status: str
    definition: CheckDefinition
    output: str = ""
    notes: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    create_index: int = 0
    modify_index: int = 0
    critical_since: float | None = None
    ttl_deadline: float | None = None
    consecutive_ok: int = 0
    consecutive_fail: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        data = dict(data)
        data["definition"] = CheckDefinition(**data["definition"])
        return cls(**data)


@dataclass
class Service:
    id: str
    name: str
    node: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    port: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    tagged_addresses: dict[str, Any] = field(default_factory=dict)
    enable_tag_override: bool = False
    create_index: int = 0
    modify_index: int = 0
    # "agent" for services registered over the HTTP API (persisted like a Consul agent does),
    # "nomad" for those the Nomad half registers for allocations (re-registered by their allocation).
    source: str = "agent"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Service:
        return cls(**data)


@dataclass
class KVEntry:
    key: str
    value: bytes
    flags: int = 0
    create_index: int = 0
    modify_index: int = 0
    lock_index: int = 0
    session: str | None = None


@dataclass
class Session:
    id: str
    name: str
    node: str
    behavior: str = "release"
    ttl_s: float | None = None
    lock_delay_s: float = 15.0
    node_checks: list[str] = field(default_factory=lambda: ["serfHealth"])
    service_checks: list[dict[str, str]] = field(default_factory=list)
    create_index: int = 0
    modify_index: int = 0
    expires_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        return cls(**data)
