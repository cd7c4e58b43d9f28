"""A GPU node's inventory as the agent publishes it (DESIGN.md, "Node inventory").

Written by the agent to Consul KV ``chutes/nodes/<node_id>`` and read by the scheduler and the devcluster.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from chutes import gpus

KV_PREFIX = "chutes/nodes/"
AGENT_SERVICE = "chutes-agent"


def agent_service_id(node_id: str) -> str:
    """Consul service ID of the agent on ``node_id``."""
    return f"{AGENT_SERVICE}-{node_id}"


class GPUInfo(BaseModel):
    """One GPU as NVML (or the simulator) reports it; fields NVML does not support stay None."""

    model_config = ConfigDict(extra="ignore")

    index: int = Field(ge=0)
    uuid: str
    name: str
    model: str | None = None
    memory_total_mib: int = Field(ge=0)
    memory_used_mib: int | None = None
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    ecc_errors: int | None = None
    healthy: bool = True


class NodeInventory(BaseModel):
    """Everything the platform knows about one node's GPUs."""

    model_config = ConfigDict(extra="ignore")

    node_id: str
    hostname: str
    nomad_node_id: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    gpus: list[GPUInfo] = Field(default_factory=list)
    updated_at: float

    def kv_key(self) -> str:
        return f"{KV_PREFIX}{self.node_id}"


def simulated_gpu_uuid(node_id: str, index: int) -> str:
    """A stable, realistic-looking NVML UUID for simulated GPU ``index`` of ``node_id``."""
    raw = uuid.uuid5(uuid.NAMESPACE_URL, f"chutes-simulated-gpu/{node_id}/{index}")
    return f"GPU-{raw}"


def simulated_gpus(node_id: str, model: str, count: int, start_index: int = 0) -> list[GPUInfo]:
    """``count`` idle, healthy GPUs of catalog ``model`` as NVML would report them on ``node_id``."""
    gpu = gpus.get(model)
    return [
        GPUInfo(
            index=i,
            uuid=simulated_gpu_uuid(node_id, i),
            name=gpu.nvml_name,
            model=gpu.id,
            memory_total_mib=gpu.memory_mib,
            memory_used_mib=0,
            utilization_pct=0.0,
            temperature_c=35.0,
            power_w=60.0,
            ecc_errors=0,
            healthy=True,
        )
        for i in range(start_index, start_index + count)
    ]
