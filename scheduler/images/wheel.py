"""The wheel of this package's runtime that every built image installs, at exactly the scheduler's code.

Built from the files the running ``chutes`` package imports from (a regular install, an editable one or a
checkout alike), so what an image runs is what this scheduler runs. Its version is the package's version with a
local label made of a hash of those files (``0.1.0+3f2a…``): two schedulers on the same code build byte-identical
wheels, and a changed file gives another version. Its dependencies are only what ``python -m chutes.runtime``
imports; the control plane's (SQLAlchemy, python-nomad, …) stay out of images.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

DIST = "chutes-nomad"
# What `python -m chutes.runtime` imports (the control-plane dependencies stay out of the image).
RUNTIME_DEPENDENCIES = frozenset(
    {"fastapi", "uvicorn", "httptools", "pydantic", "typer", "rich", "httpx", "aiohttp", "prometheus-client",
     "pyyaml", "python-multipart"}
)  # fmt: skip
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest time: a reproducible archive


@dataclass(frozen=True)
class RuntimeWheel:
    filename: str
    version: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def runtime_requirements() -> list[str]:
    """The runtime's dependencies with the version bounds the installed package declares."""
    out = []
    for spec in importlib.metadata.requires(DIST) or []:
        if ";" in spec and "extra" in spec.split(";", 1)[1]:
            continue
        name = re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].strip().lower()
        if name in RUNTIME_DEPENDENCIES:
            out.append(spec)
    return sorted(out)


def _package_files() -> dict[str, bytes]:
    """Every file of the ``chutes`` package as imported now: archive name → content."""
    import chutes

    files: dict[str, bytes] = {}
    for root in chutes.__path__:
        base = Path(root)
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                # Compiled files stay out: bytecode, and the gateway's C accelerators (built for this host's
                # Python and CPU, not the image's; the runtime does not use them and the wheel stays pure).
                if name.endswith((".pyc", ".pyo", ".so")):
                    continue
                path = Path(dirpath, name)
                files["chutes/" + path.relative_to(base).as_posix()] = path.read_bytes()
    return files


def _record_line(name: str, content: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).decode().rstrip("=")
    return f"{name},sha256={digest},{len(content)}"


def build_runtime_wheel() -> RuntimeWheel:
    """A reproducible wheel of the running package (see the module docstring)."""
    files = _package_files()
    code = hashlib.sha256()
    for name in sorted(files):
        code.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    base_version = importlib.metadata.version(DIST).split("+")[0]
    version = f"{base_version}+{code.hexdigest()[:12]}"
    dist_info = f"chutes_nomad-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {DIST}",
        f"Version: {version}",
        "Summary: the runtime of chutes-nomad (built by the scheduler for an image)",
        *(f"Requires-Dist: {spec}" for spec in runtime_requirements()),
    ]
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: chutes-scheduler\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(name, content) for name, content in sorted(files.items())]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return RuntimeWheel(f"chutes_nomad-{version}-py3-none-any.whl", version, buf.getvalue())


_cached: RuntimeWheel | None = None


def runtime_wheel() -> RuntimeWheel:
    """The wheel, built once per process (the code a running scheduler imports does not change)."""
    global _cached
    if _cached is None:
        _cached = build_runtime_wheel()
    return _cached
