"""What the dashboard's own API (``/ui/api``) takes and answers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chutes.scheduler.api.schemas import ChuteOut, GPUOut, NodeOut


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(min_length=1, max_length=512)


class Features(BaseModel):
    """Which optional parts the scheduler serves (pages appear when their API does)."""

    gateway: bool = Field(description="a gateway is configured: the cord form can call chutes")
    images: bool = False
    secrets: bool = False


class SessionOut(BaseModel):
    user_id: str
    username: str
    is_admin: bool
    role: str
    csrf_token: str | None = Field(description="send as X-Chutes-CSRF with every write made with the cookie")
    expires_at: float | None
    features: Features


class InstanceSummary(BaseModel):
    live: int = Field(description="instances not stopped (pending, running or ready)")
    ready: int
    gpu_models: list[str]


class ChuteRow(ChuteOut):
    instances: InstanceSummary
    owned: bool = Field(description="the caller owns it (or is an admin): it may scale, share and delete it")


class CordOut(BaseModel):
    name: str
    public_api_path: str
    public_api_method: str
    stream: bool
    example: dict[str, Any]
    input_schema: dict[str, Any] | None = None


class ChuteDetail(ChuteRow):
    tagline: str = ""
    readme: str = ""
    cord_forms: list[CordOut]
    invoke_url: str | None = Field(description="the gateway address of the chute, when a gateway is configured")


class TryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chute: str = Field(min_length=1, max_length=256)
    cord: str = Field(min_length=1, max_length=128)
    input: dict[str, Any] = Field(default_factory=dict)


class HolderOut(BaseModel):
    instance_id: str
    chute_id: str | None = Field(description="None when the caller may not see the chute")
    chute_name: str | None = None


class GPUView(GPUOut):
    held_by: HolderOut | None = None


class VerdictOut(BaseModel):
    fits: bool
    reason: str | None
    label: str
    hint: str | None
    gpu_model: str | None = None
    gpu_uuids: list[str] = Field(default_factory=list)


class NodeView(NodeOut):
    gpus: list[GPUView] = Field(default_factory=list)  # type: ignore[assignment]
    verdict: VerdictOut | None = None


class NodesOut(BaseModel):
    nodes: list[NodeView]
    chute: str | None = Field(description="the chute whose placement is explained, if one was asked for")
    explanation: str | None = Field(description="where the next instance of that chute would go, or why nowhere")
    hint: str | None = None


class RunningInstance(BaseModel):
    instance_id: str
    chute_id: str
    chute_name: str
    username: str
    node_id: str | None
    gpu_model: str | None
    gpu_count: int
    hourly_usd: Decimal
    ready_at: float
    cost_usd: Decimal


class RunningOut(BaseModel):
    now: float
    instances: list[RunningInstance]
    hourly_usd: Decimal
    cost_usd: Decimal


class ModelUsageOut(BaseModel):
    gpu_model: str
    gpu_seconds: Decimal
    cost_usd: Decimal


class ByModelOut(BaseModel):
    start: str
    end: str
    models: list[ModelUsageOut]
