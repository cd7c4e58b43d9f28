"""The manifest: what the SDK sends the scheduler about a chute (DESIGN.md, "Manifest").

Pydantic models with unknown fields rejected, so the scheduler validates exactly what it stores. Cord and
job entries carry only data (paths, flags, JSON schemas), never code.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chutes.chute.node_selector import NodeSelector
from chutes.identity import chute_id, validate_chute_name, validate_username

# One way to match each part (no overlapping quantifiers): linear time, where "+[...]*" backtracked
# quadratically (a 5,000-character path took seconds to refuse).
CORD_PATH_RE = re.compile(r"^(/[a-z0-9_][a-z0-9_-]*)+$")
JOB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageSpec(_Strict):
    """The image a chute runs in: a reference and, for a built image, its Dockerfile."""

    ref: str = Field(min_length=1, max_length=512)
    dockerfile: str | None = None


class CordSpec(_Strict):
    """One HTTP endpoint of a chute."""

    name: str = Field(min_length=1, max_length=128)
    path: str
    public_api_path: str
    public_api_method: Literal["GET", "POST"] = "POST"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    stream: bool = False
    passthrough: bool = False
    passthrough_port: int | None = Field(None, ge=1, le=65535)
    passthrough_path: str | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    output_content_type: str | None = None

    @field_validator("path", "public_api_path", "passthrough_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not CORD_PATH_RE.fullmatch(value):
            raise ValueError(
                f"invalid path {value!r}: use '/'-separated parts of lower-case letters, digits, '_' and '-'"
            )
        return value

    @field_validator("path", "public_api_path")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        # As the SDK's @cord refuses them: a hand-written manifest must not claim the runtime's own paths.
        if value.startswith("/_"):
            raise ValueError(f"invalid path {value!r}: paths starting with '/_' are reserved for the runtime")
        return value


class PortSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    port: int = Field(ge=1, le=65535)
    proto: Literal["tcp", "udp", "http"] = "tcp"


class JobSpec(_Strict):
    """One job method of a chute."""

    name: str
    timeout: int | None = Field(None, ge=30, le=86400)
    upload: bool = True
    ports: list[PortSpec] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not JOB_NAME_RE.fullmatch(value):
            raise ValueError(f"invalid job name {value!r}: use a Python identifier of at most 128 characters")
        return value


class Manifest(_Strict):
    """Everything the platform needs to know about a chute, except its code (which travels in the bundle)."""

    chute_id: str
    username: str
    name: str
    tagline: str = Field("", max_length=1024)
    readme: str = Field("", max_length=65536)
    revision: str | None = Field(None, max_length=128)
    standard_template: str | None = Field(None, max_length=64)
    image: ImageSpec
    node_selector: NodeSelector = Field(default_factory=NodeSelector)
    concurrency: int = Field(1, ge=1, le=1024)
    max_instances: int = Field(1, ge=1, le=100)
    scaling_threshold: float = Field(0.75, ge=0, le=1)
    shutdown_after_seconds: int = Field(300, ge=60, le=604800)
    allow_external_egress: bool = False
    cords: list[CordSpec] = Field(default_factory=list)
    jobs: list[JobSpec] = Field(default_factory=list)
    sdk_version: str = Field(max_length=64)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        return validate_username(value)

    @field_validator("node_selector", mode="before")
    @classmethod
    def _known_selector_fields(cls, value: Any) -> Any:
        # NodeSelector ignores unknown fields in users' code (as Chutes does, with a warning); on the wire the
        # manifest stays strict: the SDK never sends one.
        if isinstance(value, dict):
            known = set(NodeSelector.model_fields) | set(NodeSelector.model_computed_fields)
            unknown = sorted(str(k) for k in value if k not in known)
            if unknown:
                raise ValueError(f"unknown node_selector field(s): {', '.join(unknown)}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_chute_name(value)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        expected = chute_id(self.username, self.name)
        if self.chute_id != expected:
            raise ValueError(f"chute_id does not match username and name (expected {expected})")
        if self.cords and self.jobs:
            raise ValueError("a chute has cords or jobs, not both")
        if not self.cords and not self.jobs:
            raise ValueError("a chute needs at least one cord or one job")
        seen: set[str] = set()
        for cord in self.cords:
            if cord.path in seen:
                raise ValueError(f"duplicate cord path {cord.path!r}")
            seen.add(cord.path)
        public: dict[tuple[str, str], list[CordSpec]] = {}
        for cord in self.cords:
            public.setdefault((cord.public_api_method, cord.public_api_path), []).append(cord)
        for (method, path), group in public.items():
            # A streaming and a non-streaming cord may share an address; the body's "stream" field picks one.
            if len(group) > 1 and not (len(group) == 2 and group[0].stream != group[1].stream):
                raise ValueError(
                    f"cords {', '.join(c.name for c in group)} share {method} {path}: only a stream/non-stream "
                    "pair may share a public address"
                )
        names = [j.name for j in self.jobs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate job name")
        return self
