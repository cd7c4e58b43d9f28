"""The environment of a task and Nomad's ``${...}`` interpolation of its config, env and services."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.constraints import resolve_node_target
from chutes.devcluster.nomad.nodes import Node
from chutes.devcluster.nomad.records import Allocation

_VAR = re.compile(r"\$\{([^}]+)\}")

# raw_exec tasks get the host's environment as in Nomad, minus Nomad's default ``env.denylist``, the
# platform's own settings (CHUTES_*: admin and gateway keys, tokens, env files), the host's Nomad/Consul/Vault
# settings and anything named like a credential: a task never inherits what the platform runs with. (docker
# tasks get nothing of the host's environment, as in Nomad; podman itself runs with this one.)
_DENIED_PREFIXES = ("CHUTES_", "NOMAD_", "CONSUL_", "VAULT_")
_DENIED_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY", "APIKEY", "ACCESS_KEY", "AUTH")


def host_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What of the devcluster's environment a task (or the podman running a container) inherits."""
    return {
        k: v
        for k, v in environ.items()
        if not k.upper().startswith(_DENIED_PREFIXES) and not any(w in k.upper() for w in _DENIED_WORDS)
    }


# Where Nomad's docker driver mounts the allocation's directories inside the container.
CONTAINER_ALLOC_DIR = "/alloc"
CONTAINER_TASK_DIR = "/local"
CONTAINER_SECRETS_DIR = "/secrets"


@dataclass(frozen=True)
class TaskDirs:
    alloc_dir: Path
    task_dir: Path  # NOMAD_TASK_DIR is <task>/local, as in Nomad
    secrets_dir: Path
    logs_dir: Path

    @classmethod
    def of(cls, alloc_root: Path, task: str) -> TaskDirs:
        return cls(
            alloc_dir=alloc_root / "alloc",
            task_dir=alloc_root / task / "local",
            secrets_dir=alloc_root / task / "secrets",
            logs_dir=alloc_root / "alloc" / "logs",
        )

    def create(self) -> None:
        for path in (self.alloc_dir, self.task_dir, self.secrets_dir, self.logs_dir, self.alloc_dir / "data"):
            path.mkdir(parents=True, exist_ok=True)


def _env_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def task_env(
    alloc: Allocation,
    job: models.Job,
    group: models.TaskGroup,
    task: models.Task,
    node: Node,
    dirs: TaskDirs,
    in_container: bool = False,
) -> dict[str, str]:
    """The ``NOMAD_*`` variables, GPU visibility, meta, then the task's own ``Env`` (interpolated).

    ``in_container``: as Nomad's docker driver sets them, the directories are where it mounts them
    (``/alloc``, ``/local``, ``/secrets``), ``NOMAD_PORT_<label>`` is the port inside the container (``To``
    when set) and only ``NVIDIA_VISIBLE_DEVICES`` names the GPUs (the container runtime applies it).
    """
    env: dict[str, str] = {
        "NOMAD_ALLOC_DIR": CONTAINER_ALLOC_DIR if in_container else str(dirs.alloc_dir),
        "NOMAD_TASK_DIR": CONTAINER_TASK_DIR if in_container else str(dirs.task_dir),
        "NOMAD_SECRETS_DIR": CONTAINER_SECRETS_DIR if in_container else str(dirs.secrets_dir),
        "NOMAD_ALLOC_ID": alloc.id,
        "NOMAD_SHORT_ALLOC_ID": alloc.id[:8],
        "NOMAD_ALLOC_NAME": alloc.name,
        "NOMAD_ALLOC_INDEX": str(alloc.index),
        "NOMAD_JOB_ID": job.ID or "",
        "NOMAD_JOB_NAME": job.Name or job.ID or "",
        "NOMAD_GROUP_NAME": group.Name or "",
        "NOMAD_TASK_NAME": task.Name or "",
        "NOMAD_DC": node.datacenter,
        "NOMAD_REGION": job.Region or "global",
        "NOMAD_NAMESPACE": job.Namespace or "default",
        "NOMAD_CPU_LIMIT": str(task.Resources.CPU if task.Resources and task.Resources.CPU else 100),
        "NOMAD_MEMORY_LIMIT": str(task.Resources.MemoryMB if task.Resources and task.Resources.MemoryMB else 300),
    }
    if job.ParentID:
        env["NOMAD_JOB_PARENT_ID"] = job.ParentID
    for port in alloc.ports:
        label = _env_key(port["Label"])
        env[f"NOMAD_PORT_{label}"] = str((port["To"] or port["Value"]) if in_container else port["Value"])
        env[f"NOMAD_HOST_PORT_{label}"] = str(port["Value"])
        env[f"NOMAD_IP_{label}"] = "127.0.0.1"
        env[f"NOMAD_HOST_IP_{label}"] = "127.0.0.1"
        env[f"NOMAD_ADDR_{label}"] = f"127.0.0.1:{port['Value']}"
        env[f"NOMAD_HOST_ADDR_{label}"] = f"127.0.0.1:{port['Value']}"
        env[f"NOMAD_ALLOC_PORT_{label}"] = str(port["To"] or port["Value"])
    gpu_ids = [i for d in alloc.devices.get(task.Name or "", []) if d.get("Vendor") == "nvidia" for i in d["DeviceIDs"]]
    if gpu_ids:
        # The NVIDIA device plugin's Reserve() sets NVIDIA_VISIBLE_DEVICES; CUDA_VISIBLE_DEVICES is added so that
        # raw_exec processes (no container runtime to apply the former) see only their GPUs too.
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
        if not in_container:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    meta: dict[str, str] = {**(job.Meta or {}), **(group.Meta or {}), **(task.Meta or {})}
    for key, value in meta.items():
        env[f"NOMAD_META_{_env_key(key)}"] = value
        env[f"NOMAD_META_{_env_key(key).upper()}"] = value
    for key, value in (task.Env or {}).items():
        env[key] = interpolate(value, env, node)
    return env


def interpolate(text: str, env: Mapping[str, str], node: Node, extra: Mapping[str, str] | None = None) -> str:
    """Replace ``${NOMAD_*}``, ``${env.X}``, ``${node.*}``, ``${attr.*}``, ``${meta.*}``; unknown stays as is."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1).strip()
        if extra and name in extra:
            return extra[name]
        if name in env:
            return env[name]
        if name.startswith("env."):
            return env.get(name[4:], m.group(0))
        value, found = resolve_node_target(m.group(0), node)
        return value if found and value is not None else m.group(0)

    return _VAR.sub(repl, text)
