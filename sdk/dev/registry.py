"""Image builds in ``chutes dev``: a local registry (the distribution registry, Debian's ``docker-registry``) on a
loopback port, and the decision whether builds are on.

``--builds auto`` (the default) turns builds on when buildah, docker-registry and curl are installed; ``on``
requires them; ``off`` leaves the scheduler without a registry (its image API then answers 409 with a hint).
With builds on, the scheduler gets ``CHUTES_REGISTRY=127.0.0.1:<port>`` (plain HTTP on loopback, so
``CHUTES_REGISTRY_TLS_VERIFY=false``) and the host's CA bundle as ``CHUTES_BUILD_CA_BUNDLE`` (for a
TLS-intercepting proxy), and the first node gets the builder node meta (``chutes_builder=true``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

BuildsMode = Literal["auto", "on", "off"]
BUILDS_MODES: tuple[BuildsMode, ...] = ("auto", "on", "off")
BUILD_TOOLS = ("buildah", "docker-registry", "curl")
HOST_CA_BUNDLES = (Path("/etc/ssl/certs/ca-certificates.crt"), Path("/etc/pki/tls/certs/ca-bundle.crt"))
BUILDER_META = ("chutes_builder", "true")


class BuildsUnavailable(RuntimeError):
    """``--builds on`` on a machine that cannot build; the hint says what to install."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class BuildsPlan:
    enabled: bool
    message: str


def plan_builds(mode: BuildsMode, which: Callable[[str], str | None] = shutil.which) -> BuildsPlan:
    if mode not in BUILDS_MODES:
        raise BuildsUnavailable(f"--builds {mode!r} is not a mode", hint="use auto, on or off")
    if mode == "off":
        return BuildsPlan(False, "builds: off (--builds off): `chutes build` answers that builds are not configured")
    missing = [tool for tool in BUILD_TOOLS if which(tool) is None]
    if missing:
        why = f"{', '.join(missing)} not found"
        if mode == "on":
            raise BuildsUnavailable(
                f"--builds on, but {why}", hint="install buildah, docker-registry and curl, or run with --builds off"
            )
        return BuildsPlan(False, f"builds: off ({why}): `chutes build` is not available")
    return BuildsPlan(True, "builds: on (buildah; a local registry on loopback)")


def host_ca_bundle() -> str | None:
    for path in HOST_CA_BUNDLES:
        if path.is_file():
            return str(path)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_registry(root: Path, port: int | None = None, timeout: float = 20.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start docker-registry serving ``root`` on a loopback port (no TLS, no auth); (process, ``127.0.0.1:PORT``).

    A given ``port`` that is taken falls back to a free one; RuntimeError when it does not start."""
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        chosen = port if (port and attempt == 0) else _free_port()
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{chosen}\n"
        )
        with (root / "registry.log").open("ab") as log:
            proc = subprocess.Popen(
                ["docker-registry", "serve", str(config)], stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{chosen}/v2/", timeout=1).status_code == 200:
                    return proc, f"127.0.0.1:{chosen}"
            time.sleep(0.05)
        stop_registry(proc)
    raise RuntimeError(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}")


def stop_registry(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def local_registry(root: Path) -> Iterator[str]:
    """A docker-registry for the block; yields ``127.0.0.1:PORT``."""
    proc, address = start_registry(root)
    try:
        yield address
    finally:
        stop_registry(proc)
