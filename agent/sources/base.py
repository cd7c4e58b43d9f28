"""What every GPU source produces, and the rules that turn raw readings into the published GPU view.

A source (NVML on a GPU host, a simulation elsewhere) answers one question, "what GPUs does this machine have
right now?", with a :class:`GPUReading`. The daemon and ``chutes-agent probe`` never care which source answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from chutes import gpus
from chutes.core.inventory import GPUInfo

NO_GPU = "no NVIDIA GPU found"


@dataclass(frozen=True, slots=True)
class GPUReading:
    """One reading of a machine's GPUs.

    ``error`` is set when the source could not see any GPU at all (no NVML library, no driver, zero devices);
    it starts with :data:`NO_GPU` so that people and scripts can recognise it. Problems with single GPUs are
    not errors here: they appear as GPUs with ``healthy=False`` and a ``problem``.
    """

    gpus: list[GPUInfo] = field(default_factory=list)
    driver_version: str | None = None
    cuda_version: str | None = None
    source: str = ""
    error: str | None = None

    @property
    def found(self) -> bool:
        return self.error is None and bool(self.gpus)


class GPUSource(Protocol):
    """A place to read GPUs from. ``read`` never raises for a missing or broken GPU: it reports it."""

    @property
    def name(self) -> str:
        """Short label of the source for logs ("nvml", "simulated")."""
        ...

    def read(self) -> GPUReading:
        """The GPUs as they are now (blocking; the daemon runs it in a worker thread)."""
        ...

    def close(self) -> None:
        """Release what the source holds (NVML handle, files)."""
        ...


def canonicalize(gpu: GPUInfo) -> GPUInfo:
    """``gpu`` with its catalog model and health settled.

    The model comes from the NVML name and total memory through :func:`chutes.gpus.identify` (an unknown GPU
    keeps its name with ``model=None``). Volatile uncorrected ECC errors make a GPU unhealthy even when the
    source did not say so.
    """
    model = gpus.identify(gpu.name, gpu.memory_total_mib)
    healthy = gpu.healthy
    problem = gpu.problem
    if gpu.ecc_errors:
        healthy = False
        if problem is None:
            problem = f"{gpu.ecc_errors} volatile uncorrected ECC error(s)"
    if not healthy and problem is None:
        problem = "reported unhealthy"
    return gpu.model_copy(update={"model": model, "healthy": healthy, "problem": problem if not healthy else None})


def describe_health(reading: GPUReading) -> tuple[bool, str]:
    """``(all_healthy, one-line summary)`` of a reading, used as the Consul GPU-health check's output."""
    if reading.error is not None:
        return False, reading.error
    bad = [g for g in reading.gpus if not g.healthy]
    if not bad:
        return True, f"{len(reading.gpus)} GPU(s) healthy"
    parts = [f"GPU {g.index} ({g.uuid}): {g.problem or 'unhealthy'}" for g in bad]
    return False, f"{len(bad)} of {len(reading.gpus)} GPU(s) unhealthy: " + "; ".join(parts)
