"""GPU source backed by NVML (``nvidia-ml-py``, imported as ``pynvml``).

Every per-GPU field except the UUID and the name is optional: a field that the device or driver does not
support (``NVMLError_NotSupported``, missing permission, a function older drivers lack) is left ``None`` and
never fails the reading. Any other NVML error on a device (``GPU is lost``, ``Unknown Error``, a corrupted
infoROM...) marks that GPU unhealthy with the error as its ``problem``. A GPU that NVML stops listing is kept
in the reading as unhealthy ("lost") so that the platform notices, instead of silently shrinking the node.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from chutes.core.inventory import GPUInfo

from .base import NO_GPU, GPUReading, canonicalize

log = logging.getLogger(__name__)

T = TypeVar("T")
MIB = 1024 * 1024

# Error codes that mean "this field is not available here", not "this GPU is broken". Numbers as in nvml.h,
# used when a (fake or old) module lacks the constant.
_SOFT_ERRORS = {
    "NVML_ERROR_NOT_SUPPORTED": 3,
    "NVML_ERROR_NO_PERMISSION": 4,
    "NVML_ERROR_NOT_FOUND": 6,
    "NVML_ERROR_FUNCTION_NOT_FOUND": 13,
}
_INIT_HINTS = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": (
        12,
        "the NVML library (libnvidia-ml.so.1) is not installed; install the NVIDIA driver",
    ),
    "NVML_ERROR_DRIVER_NOT_LOADED": (9, "the NVIDIA kernel driver is not loaded (is `nvidia-smi` working?)"),
    "NVML_ERROR_NO_PERMISSION": (4, "no permission to open /dev/nvidia*; run the agent as root or in the video group"),
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": (18, "driver/library version mismatch; reboot or reload the NVIDIA driver"),
}


def _const(nv: ModuleType, name: str, default: int) -> int:
    value = getattr(nv, name, default)
    return int(value) if isinstance(value, int) else default


def _text(value: object) -> str:
    """NVML strings: ``str`` in current pynvml, ``bytes`` in older releases."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _cuda_version(raw: int) -> str:
    """NVML encodes CUDA versions as 1000*major + 10*minor (12040 → "12.4")."""
    return f"{raw // 1000}.{(raw % 1000) // 10}"


class NvmlSource:
    """Reads the local NVIDIA GPUs through NVML.

    ``nvml`` is the ``pynvml`` module; tests inject a stand-in with the same functions. NVML is initialised on
    the first read and again after it fails, so an agent started before the driver recovers by itself.
    """

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self._nvml = nvml
        self._initialised = False
        self._known: dict[int, GPUInfo] = {}
        self._driver_version: str | None = None
        self._cuda_version: str | None = None

    @property
    def name(self) -> str:
        return "nvml"

    # -- NVML plumbing ---------------------------------------------------------------------------------------

    def _module(self) -> ModuleType | str:
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError as exc:  # the nvidia-ml-py package itself is missing
                return f"{NO_GPU}: the nvidia-ml-py package is not installed ({exc})"
        return self._nvml

    def _is_nvml_error(self, nv: ModuleType, exc: BaseException) -> bool:
        base = getattr(nv, "NVMLError", None)
        return isinstance(base, type) and isinstance(exc, base)

    def _is_soft(self, nv: ModuleType, exc: BaseException) -> bool:
        code = getattr(exc, "value", None)
        return code in {_const(nv, name, default) for name, default in _SOFT_ERRORS.items()}

    def _init_error(self, nv: ModuleType, exc: BaseException) -> str:
        code = getattr(exc, "value", None)
        for name, (default, hint) in _INIT_HINTS.items():
            if code == _const(nv, name, default):
                return f"{NO_GPU}: {hint}"
        return f"{NO_GPU}: NVML failed to initialise: {exc}"

    def _optional(self, nv: ModuleType, problems: list[str], what: str, call: Callable[[], T]) -> T | None:
        """``call()``, or None when NVML does not support it; other NVML errors are recorded as problems."""
        try:
            return call()
        except Exception as exc:
            if not self._is_nvml_error(nv, exc):
                raise
            if not self._is_soft(nv, exc):
                problems.append(f"NVML error reading {what}: {exc}")
            return None

    # -- reading ---------------------------------------------------------------------------------------------

    def read(self) -> GPUReading:
        nv = self._module()
        if isinstance(nv, str):
            return GPUReading(source=self.name, error=nv)
        if not self._initialised:
            try:
                nv.nvmlInit()
            except Exception as exc:
                if not self._is_nvml_error(nv, exc) and not isinstance(exc, OSError):
                    raise
                return self._everything_lost(self._init_error(nv, exc))
            self._initialised = True
            problems: list[str] = []
            driver = self._optional(nv, problems, "driver version", nv.nvmlSystemGetDriverVersion)
            cuda = self._optional(nv, problems, "CUDA version", nv.nvmlSystemGetCudaDriverVersion)
            self._driver_version = _text(driver) if driver is not None else None
            self._cuda_version = _cuda_version(int(cuda)) if cuda is not None else None
        try:
            count = int(nv.nvmlDeviceGetCount())
        except Exception as exc:
            if not self._is_nvml_error(nv, exc):
                raise
            self._shutdown(nv)  # start over next time: the driver may have been reloaded
            return self._everything_lost(f"{NO_GPU}: NVML could not list devices: {exc}")
        gpus = [self._read_device(nv, index) for index in range(count)]
        for index, old in sorted(self._known.items()):
            if index >= count:
                gpus.append(self._lost(old, "GPU lost: NVML no longer lists it"))
        if not gpus:
            return GPUReading(
                source=self.name,
                driver_version=self._driver_version,
                cuda_version=self._cuda_version,
                error=f"{NO_GPU}: NVML lists no devices",
            )
        return GPUReading(
            gpus=gpus, driver_version=self._driver_version, cuda_version=self._cuda_version, source=self.name
        )

    def _read_device(self, nv: ModuleType, index: int) -> GPUInfo:
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nv.nvmlDeviceGetUUID(handle))
            name = _text(nv.nvmlDeviceGetName(handle))
        except Exception as exc:
            if not self._is_nvml_error(nv, exc):
                raise
            old = self._known.get(index)
            if old is None:
                return canonicalize(
                    GPUInfo(
                        index=index,
                        uuid=f"unknown-{index}",
                        name="unknown",
                        memory_total_mib=0,
                        healthy=False,
                        problem=f"NVML error: {exc}",
                    )
                )
            return self._lost(old, f"NVML error: {exc}")
        problems: list[str] = []

        def opt(what: str, call: Callable[[], T]) -> T | None:
            return self._optional(nv, problems, what, call)

        memory: Any = opt("memory", lambda: nv.nvmlDeviceGetMemoryInfo(handle))
        util: Any = opt("utilisation", lambda: nv.nvmlDeviceGetUtilizationRates(handle))
        temp = opt("temperature", lambda: nv.nvmlDeviceGetTemperature(handle, _const(nv, "NVML_TEMPERATURE_GPU", 0)))
        power_mw = opt("power draw", lambda: nv.nvmlDeviceGetPowerUsage(handle))
        limit_mw = opt("power limit", lambda: nv.nvmlDeviceGetEnforcedPowerLimit(handle))
        ecc_mode = opt("ECC mode", lambda: nv.nvmlDeviceGetEccMode(handle))
        ecc_enabled = None if ecc_mode is None else int(ecc_mode[0]) == _const(nv, "NVML_FEATURE_ENABLED", 1)
        ecc_errors = None
        if ecc_enabled:
            ecc_errors = opt(
                "ECC errors",
                lambda: nv.nvmlDeviceGetTotalEccErrors(
                    handle,
                    _const(nv, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1),
                    _const(nv, "NVML_VOLATILE_ECC", 0),
                ),
            )
        cc = opt("compute capability", lambda: nv.nvmlDeviceGetCudaComputeCapability(handle))
        mig = opt("MIG mode", lambda: nv.nvmlDeviceGetMigMode(handle))
        gpu = GPUInfo(
            index=index,
            uuid=uuid,
            name=name,
            memory_total_mib=int(memory.total) // MIB if memory is not None else 0,
            memory_used_mib=int(memory.used) // MIB if memory is not None else None,
            memory_free_mib=int(memory.free) // MIB if memory is not None else None,
            utilization_pct=float(util.gpu) if util is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            power_w=round(int(power_mw) / 1000, 1) if power_mw is not None else None,
            power_limit_w=round(int(limit_mw) / 1000, 1) if limit_mw is not None else None,
            ecc_enabled=ecc_enabled,
            ecc_errors=int(ecc_errors) if ecc_errors is not None else None,
            compute_capability=f"{cc[0]}.{cc[1]}" if cc is not None else None,
            mig_enabled=None if mig is None else int(mig[0]) == _const(nv, "NVML_DEVICE_MIG_ENABLE", 1),
            healthy=not problems,
            problem="; ".join(problems) or None,
        )
        gpu = canonicalize(gpu)
        self._known[index] = gpu
        return gpu

    def _lost(self, old: GPUInfo, problem: str) -> GPUInfo:
        """The last known view of a GPU that can no longer be read, marked unhealthy."""
        return old.model_copy(
            update={
                "healthy": False,
                "problem": problem,
                "memory_used_mib": None,
                "memory_free_mib": None,
                "utilization_pct": None,
                "temperature_c": None,
                "power_w": None,
            }
        )

    def _everything_lost(self, error: str) -> GPUReading:
        """NVML is unusable: GPUs seen before are reported lost; with none seen, there is no GPU at all."""
        if not self._known:
            return GPUReading(source=self.name, error=error)
        detail = error.removeprefix(f"{NO_GPU}: ")
        gpus = [self._lost(old, f"GPU lost: {detail}") for _, old in sorted(self._known.items())]
        return GPUReading(
            gpus=gpus, driver_version=self._driver_version, cuda_version=self._cuda_version, source=self.name
        )

    def _shutdown(self, nv: ModuleType) -> None:
        if self._initialised:
            self._initialised = False
            try:
                nv.nvmlShutdown()
            except Exception as exc:  # shutting down a broken NVML must not break the agent
                log.debug("nvmlShutdown failed: %s", exc)

    def close(self) -> None:
        nv = self._nvml
        if nv is not None:
            self._shutdown(nv)
