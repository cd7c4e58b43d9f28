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
    # Detail beyond DESIGN.md's fields (optional, so older readers and writers still fit).
    memory_free_mib: int | None = None
    power_limit_w: float | None = None
    ecc_enabled: bool | None = None
    compute_capability: str | None = None
    mig_enabled: bool | None = None
    problem: str | None = None  # why ``healthy`` is False, for people and logs


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


# Compute capability and default power limit (W) per catalog id, so simulated GPUs read like real ones.
_SIMULATED_SPECS: dict[str, tuple[str | None, float | None]] = {
    "3090": ("8.6", 350.0), "4090": ("8.9", 450.0), "5090": ("12.0", 575.0), "a4000": ("8.6", 140.0),
    "a4000_ada": ("8.9", 130.0), "a5000": ("8.6", 230.0), "a6000": ("8.6", 300.0), "a6000_ada": ("8.9", 300.0),
    "pro_6000": ("12.0", 600.0), "l4": ("8.9", 72.0), "a10": ("8.6", 150.0), "a40": ("8.6", 300.0),
    "l40": ("8.9", 300.0), "l40s": ("8.9", 350.0), "a100_40gb": ("8.0", 250.0), "a100_40gb_sxm": ("8.0", 400.0),
    "a100": ("8.0", 300.0), "a100_sxm": ("8.0", 400.0), "h100": ("9.0", 350.0), "h100_nvl": ("9.0", 400.0),
    "h100_sxm": ("9.0", 700.0), "h800": ("9.0", 350.0), "h20": ("9.0", 400.0), "h200": ("9.0", 700.0),
    "b200": ("10.0", 1000.0),
}  # fmt: skip
_NO_ECC = frozenset({"3090", "4090", "5090"})  # GeForce cards: ECC off or absent
_MIG_CAPABLE = frozenset(
    {"a100_40gb", "a100_40gb_sxm", "a100", "a100_sxm", "h100", "h100_nvl", "h100_sxm", "h800", "h20", "h200", "b200",
     "pro_6000"}
)  # fmt: skip


def simulated_gpu_uuid(node_id: str, index: int) -> str:
    """A stable, realistic-looking NVML UUID for simulated GPU ``index`` of ``node_id``."""
    raw = uuid.uuid5(uuid.NAMESPACE_URL, f"chutes-simulated-gpu/{node_id}/{index}")
    return f"GPU-{raw}"


def simulated_gpus(node_id: str, model: str, count: int, start_index: int = 0) -> list[GPUInfo]:
    """``count`` idle, healthy GPUs of catalog ``model`` as NVML would report them on ``node_id``."""
    gpu = gpus.get(model)
    spec = _SIMULATED_SPECS.get(gpu.id, (None, None))
    return [
        GPUInfo(
            index=i,
            uuid=simulated_gpu_uuid(node_id, i),
            name=gpu.nvml_name,
            model=gpu.id,
            memory_total_mib=gpu.memory_mib,
            memory_used_mib=0,
            memory_free_mib=gpu.memory_mib,
            utilization_pct=0.0,
            temperature_c=35.0,
            power_w=60.0,
            power_limit_w=spec[1],
            ecc_errors=0,
            ecc_enabled=gpu.id not in _NO_ECC,
            compute_capability=spec[0],
            mig_enabled=False if gpu.id in _MIG_CAPABLE else None,
            healthy=True,
        )
        for i in range(start_index, start_index + count)
    ]
