"""The GPU catalog: one table of every GPU model the platform knows, used by every part.

Ids, VRAM sizes, hourly prices and NVML name patterns follow the Chutes table. Each entry also carries a
typical NVML name and total memory (MiB) as the driver reports them, so simulated nodes look like real ones.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

MIB_PER_GB = 1000**3 / 1024**2  # the catalog's "GB" are decimal gigabytes, NVML reports MiB


@dataclass(frozen=True, slots=True)
class GPUModel:
    """One catalog entry."""

    id: str
    vram_gb: int
    hourly_usd: float
    nvml_pattern: str | None
    nvml_name: str
    memory_mib: int
    vendor: str = "nvidia"
    schedulable: bool = True

    @property
    def vram_mib(self) -> int:
        """Nominal VRAM in MiB (what a `${device.attr.memory}` constraint compares against)."""
        return int(self.vram_gb * MIB_PER_GB)


_TABLE: tuple[GPUModel, ...] = (
    GPUModel("3090", 24, 0.25, r"RTX 3090", "NVIDIA GeForce RTX 3090", 24576),
    GPUModel("4090", 24, 0.40, r"RTX 4090", "NVIDIA GeForce RTX 4090", 24564),
    GPUModel("5090", 32, 0.70, r"RTX 5090", "NVIDIA GeForce RTX 5090", 32607),
    GPUModel("a4000", 16, 0.20, r"RTX A4000(?! Ada)", "NVIDIA RTX A4000", 16376),
    GPUModel("a4000_ada", 20, 0.21, r"RTX 4000 Ada", "NVIDIA RTX 4000 Ada Generation", 20475),
    GPUModel("a5000", 24, 0.25, r"RTX A5000", "NVIDIA RTX A5000", 24564),
    GPUModel("a6000", 48, 0.50, r"RTX A6000(?! Ada)", "NVIDIA RTX A6000", 49140),
    GPUModel("a6000_ada", 48, 0.75, r"RTX 6000 Ada", "NVIDIA RTX 6000 Ada Generation", 49140),
    GPUModel("pro_6000", 96, 1.80, r"RTX PRO 6000", "NVIDIA RTX PRO 6000 Blackwell Server Edition", 97887),
    GPUModel("l4", 24, 0.25, r"\bL4(?!0)\b", "NVIDIA L4", 23034),
    GPUModel("a10", 24, 0.25, r"\bA10(?!0)(?!G)\b", "NVIDIA A10", 23028),
    GPUModel("a40", 48, 0.50, r"\bA40\b", "NVIDIA A40", 46068),
    GPUModel("l40", 48, 0.55, r"\bL40(?!S)\b", "NVIDIA L40", 46068),
    GPUModel("l40s", 48, 0.85, r"\bL40S\b", "NVIDIA L40S", 46068),
    GPUModel("a100_40gb", 40, 1.10, r"A100.?PCIE.?40GB", "NVIDIA A100-PCIE-40GB", 40960),
    GPUModel("a100_40gb_sxm", 40, 1.15, r"A100.?SXM.?.?40GB", "NVIDIA A100-SXM4-40GB", 40960),
    GPUModel("a100", 80, 1.20, r"A100.?80GB.?PCIe", "NVIDIA A100 80GB PCIe", 81920),
    GPUModel("a100_sxm", 80, 1.25, r"A100.?SXM.?.?80GB", "NVIDIA A100-SXM4-80GB", 81920),
    GPUModel("h100", 80, 1.79, r"H100.*PCIe", "NVIDIA H100 PCIe", 81559),
    GPUModel("h100_nvl", 96, 2.25, r"H100.*NVL", "NVIDIA H100 NVL", 95830),
    GPUModel("h100_sxm", 80, 2.35, r"H100.*HBM3", "NVIDIA H100 80GB HBM3", 81559),
    GPUModel("h800", 80, 1.50, r"H800.*PCIe", "NVIDIA H800 PCIe", 81559),
    GPUModel("h20", 96, 0.60, r" H20$", "NVIDIA H20", 97871),
    GPUModel("h200", 140, 2.75, r" H200\b", "NVIDIA H200", 143771),
    # AMD, reported by ROCm rather than NVML: listed for completeness, never placed (no agent reports it).
    GPUModel("mi300x", 192, 3.00, None, "AMD Instinct MI300X", 196592, vendor="amd", schedulable=False),
    GPUModel("b200", 192, 4.50, r" B200\b", "NVIDIA B200", 183359),
)

CATALOG: dict[str, GPUModel] = {gpu.id: gpu for gpu in _TABLE}
_PATTERNS: tuple[tuple[GPUModel, re.Pattern[str]], ...] = tuple(
    (gpu, re.compile(gpu.nvml_pattern)) for gpu in _TABLE if gpu.nvml_pattern is not None
)
# A MIG slice reports e.g. "NVIDIA A100-SXM4-40GB MIG 1g.5gb": it is not a whole GPU of that model.
_MIG = re.compile(r"\bMIG\b|\b\d+g\.\d+gb\b", re.IGNORECASE)
# A device whose memory is far below its model's nominal size is a slice or a misreport, not that model.
_MIN_MEMORY_FRACTION = 0.85


class UnknownGPUError(ValueError):
    """A GPU id that is not in the catalog."""


def all_ids() -> list[str]:
    """Every catalog id, sorted."""
    return sorted(CATALOG)


def get(gpu_id: str) -> GPUModel:
    """The catalog entry for ``gpu_id`` (case-insensitive); raises UnknownGPUError listing the valid ids."""
    gpu = CATALOG.get(gpu_id.strip().lower())
    if gpu is None:
        close = difflib.get_close_matches(gpu_id.strip().lower(), all_ids(), n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownGPUError(
            f"unknown GPU id {gpu_id!r}{guess}: this platform places chutes only on the GPU models of its catalog; "
            f"use one of: {', '.join(all_ids())} (or leave it out)"
        )
    return gpu


def identify(nvml_name: str, memory_mib: int | None = None) -> str | None:
    """The catalog id of a GPU from its NVML name (and total memory when known), or None.

    MIG slices and names that match no pattern give None; so does a match whose memory is far below the
    model's nominal VRAM.
    """
    if not nvml_name or _MIG.search(nvml_name):
        return None
    name = nvml_name.strip()
    for gpu, pattern in _PATTERNS:
        if pattern.search(name):
            if memory_mib is not None and memory_mib < gpu.vram_mib * _MIN_MEMORY_FRACTION:
                return None
            return gpu.id
    return None
