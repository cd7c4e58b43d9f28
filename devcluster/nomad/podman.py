"""The devcluster's ``docker`` task driver, implemented with podman.

A task's run: pull the image unless it is present (always for ``latest`` or no tag, or with ``force_pull``;
TLS verification off for loopback registries and ``--insecure-registry`` ones), ``podman create`` with the
task's environment (from a private env file, deleted once read), limits, ports, labels and GPUs
(``container_spec``), then ``podman start --attach`` as the task's process, its output appended to Nomad's log
files. Stopping sends the task's ``KillSignal`` with ``podman kill``, waits ``KillTimeout``, then SIGKILL; the
container is removed whatever ended it. Every container is labelled with its devcluster (``owner_id`` of the data
directory), allocation and task, so a devcluster killed hard removes its leftovers on the next start, and
``chutes dev`` after it stops.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import yaml

from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.container_spec import (
    LABEL_ALLOC,
    LABEL_JOB,
    LABEL_OWNER,
    LABEL_TASK,
    NOMAD_LABEL_ALLOC,
    ContainerSpec,
    ContainerSpecError,
    GPUPlan,
    container_name,
    create_argv,
    env_file_text,
    multiline_env,
    plan_gpus,
    published_ports,
)
from chutes.devcluster.nomad.docker_config import (
    DockerConfigError,
    DockerTaskConfig,
    parse_docker_config,
    parse_image_ref,
    tls_verify,
)
from chutes.devcluster.nomad.nodes import Node
from chutes.devcluster.nomad.records import Allocation
from chutes.devcluster.nomad.taskenv import TaskDirs, host_environment, interpolate, task_env

log = logging.getLogger(__name__)

DockerMode = Literal["auto", "on", "off"]
COMMAND_TIMEOUT_S = 60.0
CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
ENV_FILE = "container.env"  # beside the task's local/ and secrets/, never mounted into the container


class DriverError(RuntimeError):
    """The driver could not start the task (image pull, container create); the text is the task event's."""


def owner_id(data_dir: Path) -> str:
    """The label value that marks the containers of the devcluster using ``data_dir`` (stable across restarts)."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]


def find_podman() -> str | None:
    return shutil.which("podman")


def _tail(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "…" + text[-limit:]


#: podman's own settings that the credential scrub would drop (a path, not a secret)
_PODMAN_SETTINGS = ("REGISTRY_AUTH_FILE",)


def podman_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment podman runs with: the devcluster's, scrubbed as for raw_exec tasks (no platform keys or
    tokens), podman's own settings kept. Containers get none of it (``create_argv``: only the task's env file)."""
    source = os.environ if environ is None else environ
    env = host_environment(source)
    env.update({name: source[name] for name in _PODMAN_SETTINGS if name in source})
    return env


class Podman:
    """podman's command line, run asynchronously with a time limit (the process is killed when it expires or
    when the caller is cancelled), in a scrubbed environment (``podman_environment``)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.env = podman_environment()

    async def run(
        self, *args: str, limit_s: float = COMMAND_TIMEOUT_S, env: Mapping[str, str] | None = None
    ) -> tuple[int, str, str]:
        """``env``: variables added to podman's (scrubbed) environment: the multi-line values a container's env
        file names only, which podman takes from its own environment."""
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env={**self.env, **env} if env else self.env,
        )
        try:
            async with asyncio.timeout(limit_s):
                out, err = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            raise
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def version(self) -> str:
        code, out, err = await self.run("version", "--format", "{{.Client.Version}}", limit_s=30)
        if code != 0:
            raise DriverError(f"`podman version` failed: {_tail(err)}")
        return out.strip()

    async def image_exists(self, ref: str) -> bool:
        code, _, _ = await self.run("image", "exists", ref)
        return code == 0

    async def pull(self, ref: str, *, verify: bool, authfile: Path | None, limit_s: float) -> None:
        args = ["pull", "--quiet", f"--tls-verify={'true' if verify else 'false'}"]
        if authfile is not None:
            args += ["--authfile", str(authfile)]
        try:
            code, _, err = await self.run(*args, ref, limit_s=limit_s)
        except TimeoutError:
            raise DriverError(f"failed to pull `{ref}`: no image after {limit_s:g}s (image_pull_timeout)") from None
        if code != 0:
            raise DriverError(f"failed to pull `{ref}`: {_tail(err)}")

    async def create(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        code, out, err = await self.run(*argv[1:], env=env)
        if code != 0:
            raise DriverError(f"failed to create container: {_tail(err)}")
        return out.strip()

    async def start_attached(self, name: str, stdout: IO[bytes], stderr: IO[bytes]) -> asyncio.subprocess.Process:
        """The task's process: ``podman start --attach``, exiting with the container's exit code."""
        return await asyncio.create_subprocess_exec(
            self.binary,
            "start",
            "--attach",
            "--sig-proxy=false",
            name,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            env=self.env,
        )

    async def kill(self, name: str, signal_name: str) -> bool:
        """Send ``signal_name``; False when the container is already gone."""
        code, _, err = await self.run("kill", "--signal", signal_name, name)
        if code != 0 and "no such container" not in err and "not running" not in err:
            log.warning("podman kill %s %s: %s", signal_name, name, _tail(err))
        return code == 0

    async def remove(self, *names: str) -> None:
        if names:
            code, _, err = await self.run("rm", "--force", "--ignore", "--time", "0", *names)
            if code != 0:
                log.warning("podman rm %s: %s", " ".join(names), _tail(err))

    async def labelled(self, label: str, value: str) -> list[str]:
        code, out, err = await self.run("ps", "--all", "--filter", f"label={label}={value}", "--format", "{{.ID}}")
        if code != 0:
            raise DriverError(f"`podman ps` failed: {_tail(err)}")
        return out.split()


def cdi_device_names(dirs: Sequence[Path] = CDI_DIRS) -> frozenset[str]:
    """The fully qualified names (``kind=name``) of the devices in this host's CDI specs (JSON or YAML)."""
    names: set[str] = set()
    for folder in dirs:
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.suffix not in (".json", ".yaml", ".yml"):
                continue
            try:
                spec = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                log.warning("cannot read the CDI spec %s", path)
                continue
            if not isinstance(spec, dict) or not isinstance(spec.get("devices"), list):
                continue
            kind = spec.get("kind")
            names.update(f"{kind}={d['name']}" for d in spec["devices"] if isinstance(d, dict) and d.get("name"))
    return frozenset(names)


@dataclass(frozen=True)
class DockerDriverSettings:
    owner: str
    insecure_registries: frozenset[str] = frozenset()
    cdi_names: frozenset[str] = frozenset()
    nvidia_runtime: str | None = None


class DockerDriver:
    """Runs ``docker`` tasks as podman containers (one :class:`DockerDriver` per devcluster)."""

    def __init__(self, podman: Podman, settings: DockerDriverSettings, version: str) -> None:
        self.podman = podman
        self.settings = settings
        self.version = version
        self._pulls: dict[str, asyncio.Lock] = {}

    @classmethod
    async def detect(
        cls, mode: DockerMode, owner: str, insecure_registries: frozenset[str] = frozenset()
    ) -> DockerDriver | None:
        """The driver when ``mode`` asks for it and podman works; None for ``off`` (or ``auto`` without podman).
        ``on`` without a working podman is a DriverError."""
        if mode == "off":
            return None
        binary = find_podman()
        if binary is None:
            if mode == "on":
                raise DriverError("the docker driver needs podman, which is not on PATH")
            return None
        podman = Podman(binary)
        try:
            version = await podman.version()
        except (DriverError, OSError, TimeoutError) as exc:
            if mode == "on":
                raise DriverError(f"the docker driver needs a working podman: {exc}") from None
            log.warning("podman does not work (%s): the docker driver is off", exc)
            return None
        settings = DockerDriverSettings(
            owner=owner,
            insecure_registries=insecure_registries,
            cdi_names=await asyncio.to_thread(cdi_device_names),
            nvidia_runtime=shutil.which("nvidia-container-runtime"),
        )
        return cls(podman, settings, version)

    def attributes(self) -> dict[str, str]:
        """What a node with this driver fingerprints (Nomad's ``driver.docker.*`` attributes)."""
        runtimes = "runc,nvidia" if self.settings.nvidia_runtime else "runc"
        return {
            "driver.docker.version": self.version,
            "driver.docker.runtimes": runtimes,
            "driver.docker.os_type": "linux",
            "driver.docker.privileged.enabled": "false",
            "driver.docker.volumes.enabled": "false",
            "driver.docker.podman": "true",
        }

    async def reap_leftovers(self) -> int:
        """Remove the containers a previous run of this devcluster left (it was killed before stopping them)."""
        ids = await self.podman.labelled(LABEL_OWNER, self.settings.owner)
        await self.podman.remove(*ids)
        return len(ids)

    # -- one run of one task

    async def start(
        self,
        alloc: Allocation,
        job: models.Job,
        group: models.TaskGroup,
        task: models.Task,
        node: Node,
        dirs: TaskDirs,
        logs: tuple[IO[bytes], IO[bytes]],
        event: Callable[[str, str], None],
        template_env: Mapping[str, str] | None = None,
    ) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
        """Pull, create and start the task's container; returns the attached process and the task's env.

        ``template_env``: what the task's ``env = true`` templates rendered (a chute's secrets, instance token
        and invoke secret); as in Nomad it overrides the task's Env."""
        name = task.Name or ""
        env = task_env(alloc, job, group, task, node, dirs, in_container=True)
        env.update(template_env or {})
        try:
            config = parse_docker_config({k: self._interpolate(v, env, node) for k, v in (task.Config or {}).items()})
            gpus = self._gpus(alloc, task, node, config)
            ports = published_ports(config.ports, alloc.ports)
            ref = str(parse_image_ref(config.image))
        except (DockerConfigError, ContainerSpecError, ValueError) as exc:
            raise DriverError(str(exc)) from None
        await self._ensure_image(ref, config, dirs, event)
        env_file = dirs.task_dir.parent / ENV_FILE
        try:
            _write_private(env_file, env_file_text(env))
        except ContainerSpecError as exc:
            raise DriverError(str(exc)) from None
        resources = task.Resources or models.Resources()
        spec = ContainerSpec(
            name=container_name(name, alloc.id),
            image=ref,
            config=config,
            env_file=env_file,
            alloc_dir=dirs.alloc_dir,
            task_dir=dirs.task_dir,
            secrets_dir=dirs.secrets_dir,
            ports=tuple(ports),
            cpu_mhz=resources.CPU or 100,
            memory_mb=resources.MemoryMB or 300,
            memory_max_mb=resources.MemoryMaxMB or None,
            labels={
                LABEL_OWNER: self.settings.owner,
                LABEL_ALLOC: alloc.id,
                LABEL_TASK: name,
                LABEL_JOB: job.ID or "",
                NOMAD_LABEL_ALLOC: alloc.id,
            },
            gpus=gpus,
        )
        try:
            await self.podman.create(create_argv(self.podman.binary, spec), env=multiline_env(env))
        except ContainerSpecError as exc:
            raise DriverError(str(exc)) from None
        finally:
            env_file.unlink(missing_ok=True)
        try:
            proc = await self.podman.start_attached(spec.name, *logs)
        except BaseException:
            await self.podman.remove(spec.name)
            raise
        return proc, env

    @staticmethod
    def _interpolate(value: Any, env: Mapping[str, str], node: Node) -> Any:
        """Nomad interpolates ``${...}`` in every string of a task's config."""
        if isinstance(value, str):
            return interpolate(value, env, node)
        if isinstance(value, list):
            return [DockerDriver._interpolate(v, env, node) for v in value]
        if isinstance(value, dict):
            return {k: DockerDriver._interpolate(v, env, node) for k, v in value.items()}
        return value

    def _gpus(self, alloc: Allocation, task: models.Task, node: Node, config: DockerTaskConfig) -> GPUPlan:
        ids = [i for d in alloc.devices.get(task.Name or "", []) if d.get("Vendor") == "nvidia" for i in d["DeviceIDs"]]
        if ids and config.runtime == "runc":
            # Nomad's docker driver switches GPU tasks to the nvidia runtime and refuses another one.
            raise ContainerSpecError(
                'conflicting runtime requests: gpu runtime "nvidia" conflicts with task runtime "runc"'
            )
        index_of = {i.id: i.index for g in node.devices for i in g.instances if i.index is not None}
        return plan_gpus(
            ids,
            simulated=node.simulated,
            cdi_names=self.settings.cdi_names,
            index_of=index_of,
            nvidia_runtime=self.settings.nvidia_runtime,
        )

    async def _ensure_image(
        self, ref: str, config: DockerTaskConfig, dirs: TaskDirs, event: Callable[[str, str], None]
    ) -> None:
        image = parse_image_ref(ref)
        lock = self._pulls.setdefault(ref, asyncio.Lock())
        async with lock:
            if not (config.force_pull or image.always_pull) and await self.podman.image_exists(ref):
                return
            event("Driver", "Downloading image")
            verify = tls_verify(image, self.settings.insecure_registries)
            authfile: Path | None = None
            if config.auth is not None:
                authfile = dirs.secrets_dir.parent / "registry-auth.json"
                token = base64.b64encode(f"{config.auth.username}:{config.auth.password}".encode()).decode()
                _write_private(authfile, json.dumps({"auths": {image.registry: {"auth": token}}}))
            try:
                await self.podman.pull(ref, verify=verify, authfile=authfile, limit_s=config.pull_timeout_s)
            except DriverError:
                if authfile is None or not config.auth_soft_fail:
                    raise
                await self.podman.pull(ref, verify=verify, authfile=None, limit_s=config.pull_timeout_s)
            finally:
                if authfile is not None:
                    authfile.unlink(missing_ok=True)

    async def signal(self, alloc_id: str, task: str, signal_name: str) -> bool:
        """Send ``signal_name`` (e.g. ``SIGTERM``) to the task's container; False when it is gone."""
        return await self.podman.kill(container_name(task, alloc_id), signal_name)

    async def remove(self, alloc_id: str, task: str) -> None:
        """Remove the task's container, whatever its state (nothing when it is already gone)."""
        await self.podman.remove(container_name(task, alloc_id))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
