"""Simulated GPUs, for CPU-only machines, tests and the devcluster.

Two ways to say what to simulate:

* specs such as ``h100_sxm:8`` (``MODEL[:COUNT]``, catalog ids; several specs give one node with several
  groups, numbered on from each other);
* a JSON or YAML file (re-read when it changes, so a test or an operator can break a GPU on a running agent)::

      driver_version: "550.127.05"     # optional
      cuda_version: "12.4"             # optional
      gpus:
        - {model: h100_sxm, count: 4}                    # catalog GPUs, stable UUIDs
        - {model: a100_sxm, ecc_errors: 2}               # any GPU field may be overridden
        - {name: "NVIDIA GeForce GTX 1080", memory_total_mib: 8192}   # a GPU the catalog does not know

  The output of ``chutes-agent probe --json`` is also a valid file: it replays a real node.

UUIDs come from :func:`chutes.core.inventory.simulated_gpus`, keyed by node id and index, which the devcluster uses
for its simulated Nomad devices too: the same node id gives the same UUIDs on both sides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from chutes import gpus
from chutes.core.inventory import GPUInfo, simulated_gpu_uuid, simulated_gpus

from .base import NO_GPU, GPUReading, canonicalize

SIMULATED_DRIVER = "550.127.05"
SIMULATED_CUDA = "12.4"
MAX_COUNT = 64


class SimulationError(ValueError):
    """A simulation spec or file that cannot be used; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class SimSpec:
    """``count`` GPUs of catalog model ``model``."""

    model: str
    count: int

    @classmethod
    def parse(cls, text: str) -> SimSpec:
        """``"h100_sxm:8"`` → ``SimSpec("h100_sxm", 8)``; ``"l40s"`` means one GPU."""
        model, sep, count_text = text.strip().partition(":")
        try:
            gpu = gpus.get(model)
        except gpus.UnknownGPUError as exc:
            raise SimulationError(f"--simulate {text!r}: {exc}") from None
        if gpu.vendor != "nvidia":
            raise SimulationError(f"--simulate {text!r}: {gpu.id} is not an NVIDIA GPU; the agent reads NVML only")
        try:
            count = int(count_text) if sep else 1
        except ValueError:
            raise SimulationError(f"--simulate {text!r}: COUNT must be a whole number, as in h100_sxm:8") from None
        if not 1 <= count <= MAX_COUNT:
            raise SimulationError(f"--simulate {text!r}: COUNT must be between 1 and {MAX_COUNT}")
        return cls(gpu.id, count)


def parse_specs(values: list[str]) -> list[SimSpec]:
    """Specs from repeated ``--simulate`` values, each possibly comma- or space-separated."""
    return [SimSpec.parse(part) for value in values for part in value.replace(",", " ").split()]


def gpus_from_specs(node_id: str, specs: list[SimSpec]) -> list[GPUInfo]:
    """The simulated GPUs of ``specs`` on ``node_id``, indexed in order."""
    out: list[GPUInfo] = []
    for spec in specs:
        out.extend(simulated_gpus(node_id, spec.model, spec.count, start_index=len(out)))
    return out


def _entry_gpus(node_id: str, entry: Any, start: int, where: str) -> list[GPUInfo]:
    if not isinstance(entry, dict):
        raise SimulationError(f"{where}: expected a mapping such as {{model: h100_sxm, count: 8}}, got {entry!r}")
    fields = dict(entry)
    if "name" not in fields:
        if "model" not in fields:
            raise SimulationError(f"{where}: give either `model` (a catalog id) or `name` (an NVML name)")
        spec = SimSpec.parse(f"{fields.pop('model')}:{fields.pop('count', 1)}")
        base = simulated_gpus(node_id, spec.model, spec.count, start_index=start)
        try:
            return [GPUInfo.model_validate({**g.model_dump(), **fields, "index": g.index}) for g in base]
        except ValidationError as exc:
            raise SimulationError(f"{where}: {_first_error(exc)}") from None
    if "count" in fields:
        raise SimulationError(f"{where}: `count` goes with `model`; an entry with `name` describes one GPU")
    fields.setdefault("index", start)
    fields.setdefault("uuid", simulated_gpu_uuid(node_id, int(fields["index"])))
    try:
        return [GPUInfo.model_validate(fields)]
    except ValidationError as exc:
        raise SimulationError(f"{where}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "entry"
    return f"{loc}: {err['msg']}"


def load_file(path: Path, node_id: str) -> GPUReading:
    """The reading described by a simulation file (JSON or YAML); raises SimulationError when it is unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SimulationError(f"cannot read simulation file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SimulationError(
            f"simulation file {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise SimulationError(f"simulation file {path}: expected a mapping with a `gpus` list")
    found: list[GPUInfo] = []
    for n, entry in enumerate(data["gpus"]):
        found.extend(_entry_gpus(node_id, entry, len(found), f"{path}: gpus[{n}]"))
    indices = [g.index for g in found]
    if len(set(indices)) != len(indices):
        raise SimulationError(f"simulation file {path}: GPU indices repeat ({indices})")
    return _reading(
        found,
        str(data.get("driver_version") or SIMULATED_DRIVER),
        str(data.get("cuda_version") or SIMULATED_CUDA),
    )


def _reading(found: list[GPUInfo], driver: str, cuda: str) -> GPUReading:
    if not found:
        return GPUReading(source="simulated", error=f"{NO_GPU}: the simulation has no GPUs")
    return GPUReading(
        gpus=[canonicalize(g) for g in found], driver_version=driver, cuda_version=cuda, source="simulated"
    )


class SimulatedSource:
    """GPUs from specs or from a file (re-read when its modification time changes).

    Construction validates everything, so a bad spec or file fails at startup with a clear message. A file that
    turns bad while the agent runs keeps the last good reading (and raises SimulationError from ``read`` only
    when there has never been one).
    """

    def __init__(self, node_id: str, specs: list[SimSpec] | None = None, file: Path | None = None) -> None:
        if file is not None and specs:
            raise SimulationError("give either simulation specs or a simulation file, not both")
        self._node_id = node_id
        self._specs = list(specs or [])
        self._file = file
        self._mtime: float | None = None
        self._last: GPUReading | None = None
        self.last_error: str | None = None
        self._last = self.read()

    @property
    def name(self) -> str:
        return "simulated"

    def read(self) -> GPUReading:
        if self._file is None:
            if self._last is None:
                self._last = _reading(gpus_from_specs(self._node_id, self._specs), SIMULATED_DRIVER, SIMULATED_CUDA)
            return self._last
        try:
            mtime = self._file.stat().st_mtime_ns / 1e9
        except OSError as exc:
            if self._last is None:
                raise SimulationError(f"cannot read simulation file {self._file}: {exc.strerror or exc}") from None
            self.last_error = f"cannot read simulation file {self._file}: {exc.strerror or exc}"
            return self._last
        if self._last is not None and mtime == self._mtime:
            return self._last
        try:
            reading = load_file(self._file, self._node_id)
        except SimulationError as exc:
            if self._last is None:
                raise
            self.last_error = str(exc)
            return self._last
        self._mtime, self._last, self.last_error = mtime, reading, None
        return reading

    def close(self) -> None:
        return None
