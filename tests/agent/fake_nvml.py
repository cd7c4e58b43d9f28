"""A stand-in for the ``pynvml`` module, driven by a table of devices.

It keeps the real module's constants and error classes (``pynvml`` imports without a GPU or driver; only
``nvmlInit`` needs the library), so the agent's NVML source sees the same exception types and codes as on a
real host. Values below are what NVML reports on real cards (names, byte totals, milliwatts, encodings).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import pynvml

MIB = 1024 * 1024
NOT_SUPPORTED = "not-supported"


@dataclass
class FakeDevice:
    uuid: str
    name: str
    total_mib: int
    used_mib: int = 0
    util_gpu: int = 0
    temperature_c: int = 34
    power_mw: int = 65_000
    power_limit_mw: int | str = 700_000
    ecc_mode: list[int] | str = field(default_factory=lambda: [1, 1])
    ecc_volatile_uncorrected: int | str = 0
    compute_capability: tuple[int, int] = (9, 0)
    mig_mode: list[int] | str = field(default_factory=lambda: [0, 0])
    errors: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code it raises


@dataclass
class _Memory:
    total: int
    free: int
    used: int


@dataclass
class _Utilization:
    gpu: int
    memory: int


def H100_SXM(i: int, **kw: Any) -> FakeDevice:
    return FakeDevice(f"GPU-9c1e2d3a-4b5c-6d7e-8f90-a1b2c3d4e5f{i}", "NVIDIA H100 80GB HBM3", 81559, **kw)


def RTX_3090(i: int, **kw: Any) -> FakeDevice:
    # GeForce: no ECC and no MIG (NVML answers NotSupported), compute capability 8.6.
    kw.setdefault("ecc_mode", NOT_SUPPORTED)
    kw.setdefault("ecc_volatile_uncorrected", NOT_SUPPORTED)
    kw.setdefault("mig_mode", NOT_SUPPORTED)
    kw.setdefault("compute_capability", (8, 6))
    kw.setdefault("power_limit_mw", 350_000)
    return FakeDevice(f"GPU-3090aaaa-0000-1111-2222-33334444555{i}", "NVIDIA GeForce RTX 3090", 24576, **kw)


def build(devices: list[FakeDevice], *, driver: str = "550.90.07", cuda: int = 12040,
          init_error: int | None = None) -> types.ModuleType:  # fmt: skip
    """A module object with pynvml's API over ``devices`` (a list the test may edit between reads)."""
    mod = types.ModuleType("pynvml")
    for name in dir(pynvml):
        if name.startswith(("NVML_", "NVMLError")):
            setattr(mod, name, getattr(pynvml, name))
    state = {"init": 0, "shutdown": 0}
    mod.calls = state

    def err(code: int) -> Exception:
        return pynvml.NVMLError(code)

    def dev(handle: Any) -> FakeDevice:
        return devices[handle]

    def check(handle: Any, fn: str) -> FakeDevice:
        d = dev(handle)
        if fn in d.errors:
            raise err(d.errors[fn])
        return d

    def value(v: Any) -> Any:
        if v == NOT_SUPPORTED:
            raise err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return v

    def nvmlInit() -> None:
        if init_error is not None:
            raise err(init_error)
        state["init"] += 1

    def nvmlShutdown() -> None:
        state["shutdown"] += 1

    def nvmlDeviceGetHandleByIndex(i: int) -> int:
        if i >= len(devices):
            raise err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        check(i, "nvmlDeviceGetHandleByIndex")
        return i

    mod.nvmlInit = nvmlInit
    mod.nvmlShutdown = nvmlShutdown
    mod.nvmlSystemGetDriverVersion = lambda: driver
    mod.nvmlSystemGetCudaDriverVersion = lambda: cuda
    mod.nvmlDeviceGetCount = lambda: len(devices)
    mod.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex
    mod.nvmlDeviceGetUUID = lambda h: check(h, "nvmlDeviceGetUUID").uuid
    mod.nvmlDeviceGetName = lambda h: check(h, "nvmlDeviceGetName").name

    def memory(h: Any) -> _Memory:
        d = check(h, "nvmlDeviceGetMemoryInfo")
        return _Memory(total=d.total_mib * MIB, used=d.used_mib * MIB, free=(d.total_mib - d.used_mib) * MIB)

    mod.nvmlDeviceGetMemoryInfo = memory
    mod.nvmlDeviceGetUtilizationRates = lambda h: _Utilization(
        gpu=check(h, "nvmlDeviceGetUtilizationRates").util_gpu, memory=0
    )

    def temperature(h: Any, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return int(check(h, "nvmlDeviceGetTemperature").temperature_c)

    mod.nvmlDeviceGetTemperature = temperature
    mod.nvmlDeviceGetPowerUsage = lambda h: check(h, "nvmlDeviceGetPowerUsage").power_mw
    mod.nvmlDeviceGetEnforcedPowerLimit = lambda h: value(check(h, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw)
    mod.nvmlDeviceGetEccMode = lambda h: value(check(h, "nvmlDeviceGetEccMode").ecc_mode)

    def ecc_errors(h: Any, error_type: int, counter_type: int) -> int:
        assert error_type == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        assert counter_type == pynvml.NVML_VOLATILE_ECC
        return int(value(check(h, "nvmlDeviceGetTotalEccErrors").ecc_volatile_uncorrected))

    mod.nvmlDeviceGetTotalEccErrors = ecc_errors
    mod.nvmlDeviceGetCudaComputeCapability = lambda h: check(h, "nvmlDeviceGetCudaComputeCapability").compute_capability
    mod.nvmlDeviceGetMigMode = lambda h: value(check(h, "nvmlDeviceGetMigMode").mig_mode)
    return mod
