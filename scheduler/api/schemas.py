"""What the API's answers and request bodies look like (pydantic; shown in the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chutes.manifest import CordSpec


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Me(BaseModel):
    user_id: str
    username: str
    is_admin: bool


class UserCreate(_In):
    username: str = Field(min_length=1, max_length=63, description="a username, or a user id")
    is_admin: bool = False


class UserCreated(BaseModel):
    user_id: str
    username: str
    is_admin: bool
    api_key: str = Field(description="the user's first API key; shown only this once")
    key_id: str


class KeyCreate(_In):
    name: str = Field("", max_length=128)
    role: str = Field("user", description="user (default), or gateway/admin for admins")


class KeyOut(BaseModel):
    key_id: str
    name: str
    prefix: str
    role: str
    created_at: float
    revoked_at: float | None = None


class KeyCreated(KeyOut):
    api_key: str = Field(description="the secret key; shown only this once")


class ChuteOut(BaseModel):
    chute_id: str
    username: str
    name: str
    slug: str
    version: str
    public: bool
    status: str
    status_detail: str = ""
    desired_instances: int
    max_instances: int
    concurrency: int
    gpu_count: int
    eligible_gpus: list[str]
    hourly_price_usd: float
    cords: list[dict[str, Any]] = Field(default_factory=list)
    jobs: list[str] = Field(default_factory=list)
    shared_with: list[str] = Field(default_factory=list)
    nomad_job_id: str
    host_label: str | None = Field(None, description="its wildcard address is https://<host_label>.<domain>")
    created_at: float
    updated_at: float
    placement: dict[str, Any] | None = Field(None, description="where the deploy's first instance was placed")


class ScaleIn(_In):
    instances: int = Field(ge=0, le=100)


class ShareIn(_In):
    username: str = Field(min_length=1, max_length=63, description="a username, or a user id")


class InstanceOut(BaseModel):
    instance_id: str = Field(description="the Nomad allocation id")
    chute_id: str
    version: str | None
    node_id: str | None
    nomad_node_id: str | None
    gpu_model: str | None
    gpu_count: int
    gpu_uuids: list[str] = Field(default_factory=list)
    state: str = Field(description="pending | running | ready | failing | stopped | failed | lost")
    desired_status: str | None = None
    client_status: str | None = None
    healthy: bool
    address: str | None = None
    port: int | None = None
    created_at: float | None = None
    message: str = Field("", description="why it is failing, failed or was lost (Nomad's task events)")


class EventOut(BaseModel):
    id: int
    chute_id: str
    version: str | None
    type: str
    message: str
    data: dict[str, Any]
    created_at: float


class GPUOut(BaseModel):
    index: int
    uuid: str
    name: str
    model: str | None
    memory_total_mib: int
    healthy: bool
    in_use: bool = False
    utilization_pct: float | None = None


class NodeOut(BaseModel):
    node_id: str
    hostname: str | None = None
    nomad_node_id: str | None = None
    alive: bool
    eligible: bool = True
    gpu_model: str | None = None
    gpu_count: int
    gpus_free: int
    gpus: list[GPUOut] = Field(default_factory=list)
    instances: dict[str, int] = Field(default_factory=dict)
    updated_at: float | None = None


class AuthenticateIn(_In):
    api_key: str = Field(min_length=1, max_length=512)


class RouteInfoOut(BaseModel):
    chute_id: str
    username: str
    name: str
    slug: str
    public: bool
    shared_with: list[str]
    concurrency: int
    invoke_secret: str
    service: str
    cords: list[CordSpec]
    max_instances: int
    host_label: str | None = Field(None, description="the <username>-<slug> host label this chute owns, if any")


class WakeOut(BaseModel):
    chute_id: str
    desired_instances: int
    woken: bool = Field(description="true when this call raised the desired count from zero")


class JobRunOut(BaseModel):
    run_id: str
    chute_id: str
    job_name: str
    status: str
    nomad_job_id: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    error: str | None = None
    result: dict[str, Any] | None = None
    outputs: list[dict[str, Any]] = Field(default_factory=list)
