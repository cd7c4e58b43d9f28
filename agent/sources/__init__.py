"""GPU sources of the node agent: NVML on GPU hosts, a simulation elsewhere (one :class:`GPUSource` seam).

``probe_local()`` is the one-call entry point for other parts of the platform (the devcluster uses it to
describe the machine it runs on when that machine has NVIDIA GPUs).
"""

from __future__ import annotations

import socket
import time
from types import ModuleType

from chutes.core.inventory import NodeInventory

from .base import NO_GPU, GPUReading, GPUSource, canonicalize, describe_health
from .nvml import NvmlSource
from .simulated import SimSpec, SimulatedSource, SimulationError, parse_specs

__all__ = [
    "NO_GPU",
    "GPUReading",
    "GPUSource",
    "NvmlSource",
    "SimSpec",
    "SimulatedSource",
    "SimulationError",
    "build_inventory",
    "canonicalize",
    "describe_health",
    "parse_specs",
    "probe_local",
]


def build_inventory(
    reading: GPUReading,
    node_id: str,
    hostname: str,
    nomad_node_id: str | None = None,
    now: float | None = None,
) -> NodeInventory:
    """The node inventory (DESIGN.md, "Node inventory") of one reading."""
    return NodeInventory(
        node_id=node_id,
        hostname=hostname,
        nomad_node_id=nomad_node_id,
        driver_version=reading.driver_version,
        cuda_version=reading.cuda_version,
        gpus=list(reading.gpus),
        updated_at=time.time() if now is None else now,
    )


def probe_local(node_id: str | None = None, *, nvml: ModuleType | None = None) -> NodeInventory | None:
    """Read this machine's NVIDIA GPUs through NVML once.

    Returns the node's inventory (node id and hostname default to this host's name; GPUs carry their catalog
    model or ``model=None`` when unknown, and ``healthy``), or ``None`` when the machine has no usable NVIDIA
    GPU: no NVML library, no driver, or no device. Never raises for a missing or broken GPU. Blocking (a few
    milliseconds per GPU); call it from a thread in async code. ``nvml`` replaces the ``pynvml`` module (tests).
    """
    source = NvmlSource(nvml)
    try:
        reading = source.read()
    finally:
        source.close()
    if not reading.found:
        return None
    hostname = socket.gethostname()
    return build_inventory(reading, node_id or hostname, hostname)
