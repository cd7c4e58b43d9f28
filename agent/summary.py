"""Short summaries of an inventory: Nomad node meta, Consul service meta, and the fingerprint of a change."""

from __future__ import annotations

import hashlib
import json

from chutes import gpus
from chutes.core.inventory import GPUInfo, NodeInventory

NOMAD_META_MODEL = "chutes_gpu_model"
NOMAD_META_COUNT = "chutes_gpu_count"
NOMAD_META_VRAM = "chutes_gpu_vram_gb"

# Readings that move all the time; they are refreshed with the periodic KV write, not on every change.
VOLATILE_GPU_FIELDS = frozenset({"memory_used_mib", "memory_free_mib", "utilization_pct", "temperature_c", "power_w"})


def models(inv: NodeInventory) -> str:
    """Comma-joined sorted catalog ids of the node's GPUs ("h100_sxm", "a100_sxm,l40s").

    ``unknown`` when the node has GPUs the catalog does not know only, ``none`` when it has no GPU: values that
    no ``set_contains_any`` constraint on catalog ids can match.
    """
    ids = sorted({g.model for g in inv.gpus if g.model})
    if ids:
        return ",".join(ids)
    return "unknown" if inv.gpus else "none"


def _vram_gb(gpu: GPUInfo) -> int:
    if gpu.model:
        return gpus.get(gpu.model).vram_gb
    return round(gpu.memory_total_mib * 1024 * 1024 / 1e9)


def vram_gb(inv: NodeInventory) -> int:
    """VRAM per GPU in the catalog's (decimal) GB: the smallest GPU of the node, 0 without GPUs."""
    return min((_vram_gb(g) for g in inv.gpus), default=0)


def nomad_meta(inv: NodeInventory) -> dict[str, str]:
    """Dynamic node meta for Nomad (DESIGN.md: ``chutes_gpu_model``, ``chutes_gpu_count``, ``chutes_gpu_vram_gb``)."""
    return {
        NOMAD_META_MODEL: models(inv),
        NOMAD_META_COUNT: str(len(inv.gpus)),
        NOMAD_META_VRAM: str(vram_gb(inv)),
    }


def service_meta(inv: NodeInventory, source: str) -> dict[str, str]:
    """Meta of the ``chutes-agent`` Consul service: what a glance at the catalog should tell."""
    return {
        "node_id": inv.node_id,
        "gpu_model": models(inv),
        "gpu_count": str(len(inv.gpus)),
        "gpu_vram_gb": str(vram_gb(inv)),
        "gpus_healthy": str(sum(1 for g in inv.gpus if g.healthy)),
        "source": source,
    }


def fingerprint(inv: NodeInventory) -> str:
    """A digest of what matters for placement: everything but the timestamp and the volatile readings."""
    data = inv.model_dump(mode="json", exclude={"updated_at"})
    data["gpus"] = [{k: v for k, v in g.items() if k not in VOLATILE_GPU_FIELDS} for g in data["gpus"]]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
