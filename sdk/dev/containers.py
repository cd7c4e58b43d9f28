"""Whether ``chutes dev`` runs instances in containers, and what that changes for the parts of the stack.

``--containers auto`` (the default) turns containers on when podman and buildah are installed and podman
works (``podman version``, and a container of the local base image starts when that image is there: a host
whose podman settings are missing, such as these VMs without ``CONTAINERS_CONF``, is found out at start-up,
with a hint, instead of failing every instance later); ``on`` requires them; ``off`` keeps every instance a
host process (``raw_exec``). With containers on:

- the devcluster runs the ``docker`` driver with podman (``--docker-driver on``);
- the scheduler renders ``docker`` tasks for chutes with a built image (its default ``CHUTES_TASK_DRIVER=auto``)
  and tells them to reach it at ``host.containers.internal`` (podman's name, inside a container, for the
  host's loopback, where the scheduler listens);
- a container reaches the host's loopback, where the devcluster's Nomad and Consul APIs listen: they are
  closed to it by the devcluster's ACLs, which ``chutes dev`` turns on in every mode (``chutes.dev.acl``: each
  part gets a least-privilege token; instances get none);
- when the stack stops, containers its devcluster left (it was killed before stopping them) are removed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ContainersMode = Literal["auto", "on", "off"]
MODES: tuple[ContainersMode, ...] = ("auto", "on", "off")
HOST_ALIAS = "host.containers.internal"
# `make base-image` builds it; the start-up probe runs a container of it when it is in local storage.
PROBE_IMAGE = "localhost/chutes-base:bookworm"
PROBE_TIMEOUT_S = 60.0
SETTINGS_HINT = (
    'podman may need settings on this host: set CONTAINERS_CONF to a containers.conf with runtime = "runc" '
    "and default_ulimits the host grants (a checkout has one: scripts/containers.conf; docs/devcluster.md)"
)


class ContainersUnavailable(RuntimeError):
    """``--containers on`` on a machine that cannot run them; the hint says what to install."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class ContainerPlan:
    """The decision and what each part of the stack gets from it."""

    enabled: bool
    message: str  # one line for the console: the mode and why
    podman_version: str | None = None

    def devcluster_args(self) -> list[str]:
        return ["--docker-driver", "on" if self.enabled else "off"]

    def scheduler_env(self) -> dict[str, str]:
        """Settings (no secrets) for the scheduler: which driver its chutes get and how they reach it."""
        if self.enabled:
            return {"CHUTES_CONTAINER_SCHEDULER_HOST": HOST_ALIAS}
        # Without the docker driver every chute must run as a process, whatever was built for it.
        return {"CHUTES_TASK_DRIVER": "raw_exec"}


def _podman_version(podman: str) -> str | None:
    try:
        result = subprocess.run(
            [podman, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def podman_probe(podman: str, image: str = PROBE_IMAGE, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why podman cannot start a container here (podman's own words), or None: it can, or there is no local
    ``image`` to try (nothing is pulled for the probe), or the probe did not finish in time (not a verdict)."""
    try:
        if subprocess.run([podman, "image", "exists", image], capture_output=True, timeout=timeout_s).returncode:
            return None
        result = subprocess.run(
            [podman, "run", "--rm", "--pull=never", "--network=none", image, "true"],
            capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    except OSError as exc:
        return f"cannot run podman: {exc}"
    if result.returncode == 0:
        return None
    text = " ".join(result.stderr.split())
    return (text if len(text) <= 300 else "…" + text[-300:]) or f"`podman run` exited with {result.returncode}"


def plan_containers(
    mode: ContainersMode,
    which: Callable[[str], str | None] = shutil.which,
    version: Callable[[str], str | None] = _podman_version,
    probe: Callable[[str], str | None] = podman_probe,
) -> ContainerPlan:
    """Decide for ``mode``; ContainersUnavailable when ``on`` cannot be honoured."""
    if mode not in MODES:
        raise ContainersUnavailable(f"--containers {mode!r} is not a mode", hint="use auto, on or off")
    if mode == "off":
        return ContainerPlan(False, "containers: off (--containers off): instances run as host processes")
    missing = [tool for tool in ("podman", "buildah") if which(tool) is None]
    podman = which("podman")
    found = version(podman) if podman and not missing else None
    if missing or found is None:
        why = f"{' and '.join(missing)} not found" if missing else "podman does not work (`podman version` failed)"
        if mode == "on":
            raise ContainersUnavailable(
                f"--containers on, but {why}",
                hint="install podman and buildah (and set CONTAINERS_CONF if this machine needs settings), "
                "or run with --containers off",
            )
        return ContainerPlan(False, f"containers: off ({why}): instances run as host processes (raw_exec)")
    assert podman is not None
    problem = probe(podman)
    if problem is not None:
        why = f"podman cannot start a container here: {problem}"
        if mode == "on":
            raise ContainersUnavailable(f"--containers on, but {why}", hint=f"{SETTINGS_HINT}, or --containers off")
        return ContainerPlan(
            False, f"containers: off ({why}; {SETTINGS_HINT}): instances run as host processes (raw_exec)"
        )
    return ContainerPlan(
        True,
        f"containers: on (podman {found}): instances run in their images; "
        "chutes without a built image run as host processes",
        podman_version=found,
    )


def remove_leftovers(devcluster_data_dir: Path) -> int:
    """Remove every container of the devcluster that used ``devcluster_data_dir``; how many there were."""
    # Imported here: the devcluster's modules are not needed by the other `chutes` commands.
    from chutes.devcluster.nomad.container_spec import LABEL_OWNER
    from chutes.devcluster.nomad.podman import owner_id

    podman = shutil.which("podman")
    if podman is None:
        return 0
    label = f"label={LABEL_OWNER}={owner_id(devcluster_data_dir)}"
    try:
        listed = subprocess.run(
            [podman, "ps", "--all", "--quiet", "--filter", label], capture_output=True, text=True, timeout=60
        )
        ids = listed.stdout.split() if listed.returncode == 0 else []
        if ids:
            subprocess.run([podman, "rm", "--force", "--time", "0", *ids], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len(ids)
