"""One task as a podman container (pure): its name, labels, mounts, ports, limits, GPUs and ``podman create`` argv.

Networking: each container gets its own network namespace through slirp4netns (no ``--network host``, no
shared bridge between chutes), with ``allow_host_loopback`` so that it reaches services the host serves on
loopback (the scheduler of ``chutes dev``: bundle download, job output upload) at ``10.0.2.2``, also named
``host.containers.internal`` / ``host.docker.internal`` inside. Its ports are published on the host's
127.0.0.1 only, host port = the allocation's port, container port = the port's ``To`` (else the same number),
which is what Consul's checks and the gateway dial.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chutes.devcluster.nomad.docker_config import DockerTaskConfig, check_env_name
from chutes.devcluster.nomad.taskenv import CONTAINER_ALLOC_DIR, CONTAINER_SECRETS_DIR, CONTAINER_TASK_DIR

# Labels every devcluster container carries: the owner (one devcluster data dir) is what start-up reaping and
# `chutes dev` match on; the allocation and task say what it runs.
LABEL_OWNER = "io.chutes.devcluster"
LABEL_ALLOC = "io.chutes.devcluster.alloc_id"
LABEL_TASK = "io.chutes.devcluster.task"
LABEL_JOB = "io.chutes.devcluster.job_id"
NOMAD_LABEL_ALLOC = "com.hashicorp.nomad.alloc_id"  # the label Nomad's docker driver sets

NETWORK = "slirp4netns:allow_host_loopback=true"
HOST_LOOPBACK = "10.0.2.2"  # slirp4netns's address of the host's loopback interface
HOST_NAMES = ("host.containers.internal", "host.docker.internal")
DEFAULT_PIDS_LIMIT = 4096
MHZ_PER_CPU = 1000.0  # a cpu_hard_limit of N MHz gets N/1000 CPUs
_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_.-]")


class ContainerSpecError(ValueError):
    """The task cannot become a container as asked; the message says why (a task event's text)."""


def container_name(task: str, alloc_id: str) -> str:
    """``<task>-<alloc_id>``, as Nomad's docker driver names containers (characters podman refuses become -)."""
    return f"{_NAME_CHARS.sub('-', task).lstrip('-.') or 'task'}-{alloc_id}"


@dataclass(frozen=True)
class GPUPlan:
    """How the allocated GPUs reach the container: CDI device names, or the NVIDIA runtime, or env only."""

    devices: tuple[str, ...] = ()
    runtime: str | None = None
    how: str = "none"


def plan_gpus(
    gpu_ids: Sequence[str],
    *,
    simulated: bool,
    cdi_names: frozenset[str],
    index_of: Mapping[str, int],
    nvidia_runtime: str | None,
) -> GPUPlan:
    """Pass real GPUs by CDI name (``nvidia.com/gpu=<uuid>`` or ``=<index>``), else through the NVIDIA container
    runtime (which reads ``NVIDIA_VISIBLE_DEVICES``); simulated GPUs only get the environment variable."""
    if not gpu_ids:
        return GPUPlan()
    if simulated:
        return GPUPlan(how="simulated: NVIDIA_VISIBLE_DEVICES only")
    names: list[str] = []
    for gpu in gpu_ids:
        by_uuid, index = f"nvidia.com/gpu={gpu}", index_of.get(gpu)
        by_index = f"nvidia.com/gpu={index}" if index is not None else None
        if by_uuid in cdi_names:
            names.append(by_uuid)
        elif by_index is not None and by_index in cdi_names:
            names.append(by_index)
        else:
            break
    else:
        return GPUPlan(devices=tuple(names), how="CDI")
    if nvidia_runtime:
        return GPUPlan(runtime=nvidia_runtime, how="NVIDIA container runtime")
    raise ContainerSpecError(
        f"the allocation holds GPU(s) {', '.join(gpu_ids)} but podman cannot pass them: no CDI spec names them "
        "(run `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`) and nvidia-container-runtime is not on PATH"
    )


@dataclass(frozen=True)
class ContainerSpec:
    """Everything ``podman create`` needs for one run of one task."""

    name: str
    image: str
    config: DockerTaskConfig
    env_file: Path
    alloc_dir: Path
    task_dir: Path
    secrets_dir: Path
    ports: tuple[tuple[int, int], ...]  # (host port on 127.0.0.1, container port)
    cpu_mhz: int
    memory_mb: int
    labels: Mapping[str, str] = field(default_factory=dict)
    memory_max_mb: int | None = None
    gpus: GPUPlan = GPUPlan()


def published_ports(config_ports: Sequence[str], alloc_ports: Sequence[Mapping[str, object]]) -> list[tuple[int, int]]:
    """The ``ports`` labels of the config as (host, container) pairs; a label the group does not define fails."""
    by_label = {str(p["Label"]): p for p in alloc_ports}
    out: list[tuple[int, int]] = []
    for label in config_ports:
        port = by_label.get(label)
        if port is None:
            raise ContainerSpecError(f"port label {label!r} in config.ports is not defined in the group's network")
        host = int(str(port["Value"]))
        to = int(str(port.get("To") or 0))
        out.append((host, to if to > 0 else host))
    return out


def env_file_text(env: Mapping[str, str]) -> str:
    """An env file for ``podman create --env-file`` (secrets stay off the command line, where ``ps`` shows it).

    A value that spans lines (a PEM key kept as a chute secret) cannot be written in an env file: its line names
    the variable only, and podman takes the value from its own environment (see :func:`multiline_env`)."""
    lines = []
    for name, value in env.items():
        if not check_env_name(name):
            raise ContainerSpecError(f"environment variable name {name!r} cannot be passed to a container")
        if "\x00" in value:
            raise ContainerSpecError(f"the value of environment variable {name} contains a NUL byte")
        lines.append(name if _spans_lines(value) else f"{name}={value}")
    return "\n".join(lines) + "\n"


def multiline_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` whose values span lines: ``podman create`` must run with them in its environment."""
    return {name: value for name, value in env.items() if _spans_lines(value)}


def _spans_lines(value: str) -> bool:
    return "\n" in value or "\r" in value


def _bind(host: Path, inside: str) -> list[str]:
    text = str(host)
    if ":" in text or "," in text:
        raise ContainerSpecError(f"the allocation directory {text!r} contains ':' or ','; podman cannot mount it")
    return [f"--volume={text}:{inside}:rw"]


def create_argv(podman: str, spec: ContainerSpec) -> list[str]:
    """``podman create`` for ``spec``: removed on exit, never pulls (the driver pulled first), no own log copy
    (the output is attached to Nomad's log files instead). Every value is passed as ``--option=value``, one
    argument, so that no value from a job can be read as another option."""
    cfg = spec.config
    argv = [podman, "create", f"--name={spec.name}", "--replace", "--rm", "--pull=never", "--log-driver=none"]
    # The task's environment and nothing of the host's, whatever containers.conf says (env_host, http_proxy):
    # as with Nomad's docker driver, no variable of the devcluster (or of podman) reaches the container.
    argv += ["--env-host=false", "--http-proxy=false", f"--env-file={spec.env_file}"]
    argv += [f"--label={key}={value}" for key, value in {**cfg.labels, **spec.labels}.items()]
    argv.append(f"--network={NETWORK}")
    argv += [f"--add-host={name}:{HOST_LOOPBACK}" for name in HOST_NAMES]
    argv += [f"--publish=127.0.0.1:{host}:{inside}" for host, inside in spec.ports]
    argv += _bind(spec.alloc_dir, CONTAINER_ALLOC_DIR)
    argv += _bind(spec.task_dir, CONTAINER_TASK_DIR)
    argv += _bind(spec.secrets_dir, CONTAINER_SECRETS_DIR)
    # Nomad's docker driver: memory is a hard limit without swap (memory_hard_limit raises it and makes
    # MemoryMB the reservation); CPU is a relative share unless cpu_hard_limit asks for a quota.
    memory = cfg.memory_hard_limit or spec.memory_max_mb or spec.memory_mb
    argv += [f"--memory={memory}m", f"--memory-swap={memory}m"]
    if memory != spec.memory_mb:
        argv.append(f"--memory-reservation={spec.memory_mb}m")
    argv.append(f"--cpu-shares={max(2, spec.cpu_mhz)}")
    if cfg.cpu_hard_limit:
        argv.append(f"--cpus={max(0.01, spec.cpu_mhz / MHZ_PER_CPU):g}")
    argv.append(f"--pids-limit={cfg.pids_limit or DEFAULT_PIDS_LIMIT}")
    if cfg.shm_size:
        argv.append(f"--shm-size={cfg.shm_size}")
    if cfg.init:
        argv.append("--init")
    if cfg.work_dir:
        argv.append(f"--workdir={cfg.work_dir}")
    if cfg.readonly_rootfs:
        argv.append("--read-only")
    if cfg.no_new_privileges:
        argv.append("--security-opt=no-new-privileges")
    argv += [f"--cap-drop={cap}" for cap in cfg.cap_drop]
    argv += [f"--ulimit={name}={limit}" for name, limit in cfg.ulimits.items()]
    argv += [f"--device={device}" for device in spec.gpus.devices]
    if spec.gpus.runtime:
        argv.append(f"--runtime={spec.gpus.runtime}")
    if cfg.entrypoint is not None:
        argv.append(f"--entrypoint={json.dumps(list(cfg.entrypoint))}")
    argv.append(spec.image)
    # Nomad: `command` replaces the image's CMD and `args` follow it; without a command, args are the CMD.
    if cfg.command:
        argv.append(cfg.command)
    argv += list(cfg.args)
    return argv
