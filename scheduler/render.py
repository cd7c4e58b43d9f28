"""Render the Nomad jobs of a chute (pure): the service job that runs its instances and one batch job per job.

The shape is DESIGN.md's "Nomad job per chute"; ``jobs_hcl/chute.nomad.hcl`` is the same job in HCL. Every
value that comes from a user (username, chute name, image reference, job name) is checked here again and
only ever placed as a *value*: it never becomes a key, a block or an ID other than through the chute id (a
UUID). Nomad interpolates ``${...}`` in task config, env, meta and service names/tags at run time, and its
JSON API has no escape for that (``$${`` is an HCL-level escape only; the client's ``ReplaceEnv`` would
still expand the inner ``${...}``), so a user string containing ``${`` is refused rather than escaped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from chutes import gpus
from chutes.identity import chute_id as compute_chute_id
from chutes.identity import validate_chute_name, validate_username
from chutes.manifest import JOB_NAME_RE, JobSpec, Manifest
from chutes.scheduler.placement import Placement, min_vram_mib
from chutes.scheduler.secret_env import SecretInputError, run_template_block, template_block, validate_name

JOB_PREFIX = "chute-"
GROUP = "instance"
TASK = "runtime"
PORT_LABEL = "http"
READY_PATH = "/_ready"
SERVICE_TAG = "chutes"
DEVICE = "nvidia/gpu"
MODEL_META = "${meta.chutes_gpu_model}"
NODE_ID = "${node.unique.id}"
BATCH_GROUP = "job"
PAYLOAD_FILE = "payload.json"
RUN_ID_META = "run_id"
VERSION_CHARS = 12
ENV_NAMES = ("CHUTES_CHUTE_ID", "CHUTES_SCHEDULER_URL", "CHUTES_BUNDLE_SHA256")
# Credentials never enter the job: the task's template reads them from the job's Nomad Variable (secret_env.py).
TEMPLATE_ENV_NAMES = ("CHUTES_INSTANCE_TOKEN", "CHUTES_INVOKE_SECRET")
SECRETS_META = "chute_secrets"  # job Meta: the names (never the values) of the user secrets the template lists

_NS = 1_000_000_000  # Nomad's JSON durations are integer nanoseconds
TaskDriver = Literal["raw_exec", "docker"]
DriverChoice = Literal["auto", "raw_exec", "docker"]
_INTERPOLATION = re.compile(r"\$\{")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A Docker image reference: [registry[:port]/]path[:tag][@digest]; a registry has a dot or a port or is
# localhost (as Docker decides), path components are lower case.
_IMAGE_REF = re.compile(
    r"^(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]{1,5})?/|[a-zA-Z0-9-]+:[0-9]{1,5}/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


class RenderError(ValueError):
    """A value cannot be put into a Nomad job safely; the message says which and why."""


def job_id(chute_id: str) -> str:
    """Nomad job ID of a chute's instances."""
    return f"{JOB_PREFIX}{chute_id}"


def service_name(chute_id: str) -> str:
    """Consul service name of a chute's instances."""
    return f"{JOB_PREFIX}{chute_id}"


def batch_job_id(chute_id: str, job_name: str) -> str:
    """Nomad job ID of the parameterized batch job that runs ``job_name`` of a chute."""
    return f"{JOB_PREFIX}{chute_id}-job-{job_name}"


def chute_version(bundle_sha256: str) -> str:
    """The version of a chute that ``Meta.chute_version`` carries: a prefix of its bundle's sha256."""
    return bundle_sha256[:VERSION_CHARS]


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """Deployment-wide settings of the rendered jobs (from the scheduler's configuration)."""

    scheduler_url: str
    datacenters: tuple[str, ...] = ("dc1",)
    # auto: docker when the release has a built image, raw_exec otherwise; raw_exec / docker force one.
    driver: DriverChoice = "auto"
    # The runtime's command line on the node (raw_exec): an interpreter with this package installed.
    runtime_command: tuple[str, ...] = ("python3", "-m", "chutes.runtime")
    # The runtime's command line inside the image (docker): every built image ends with the runtime layer.
    container_command: tuple[str, ...] = ("python3", "-m", "chutes.runtime")
    # Where containers reach the scheduler when that differs from scheduler_url (None: the same URL).
    container_scheduler_url: str | None = None
    container_pids_limit: int = 16384  # threads count: inference engines start many
    container_shm_mb: int = 2048  # /dev/shm; Docker's 64 MiB default is too small for PyTorch and NCCL
    image_pull_timeout_s: int = 1800  # model images are large: Nomad's 5 min default is too short
    region: str | None = None
    namespace: str | None = None
    priority: int = 50
    cpu_mhz_per_gpu: int = 1000
    memory_mb_per_gpu: int = 4096
    disk_mb: int = 2048
    kill_timeout_s: int = 40  # > the runtime's drain timeout (CHUTES_DRAIN_TIMEOUT, 30 s) so a drain completes
    shutdown_delay_s: int = 5  # deregistered from Consul this long before the kill, so the gateway stops routing
    check_interval_s: int = 5
    check_timeout_s: int = 2
    healthy_deadline_s: int = 1800  # first start may download model weights: be patient before calling it failed
    extra_env: Mapping[str, str] = field(default_factory=dict)  # operator-set (e.g. HF_HOME), never user input


@dataclass(frozen=True, slots=True)
class ChuteRelease:
    """The per-version values of a chute: its bundle, the names of its secrets, how many instances, where."""

    bundle_sha256: str
    count: int = 1
    secret_names: tuple[str, ...] = ()  # the user secrets its instances get as environment variables
    preferred_model: str | None = None  # an affinity, from the placement decision
    preferred_nodes: tuple[str, ...] = ()  # Nomad node IDs, an affinity, from the placement decision
    # The built image, ``<registry>/<user>/<name>:<tag>@sha256:<digest>`` (None: no image was built).
    image_ref: str | None = None

    def with_placements(self, placements: Sequence[Placement]) -> ChuteRelease:
        """This release preferring where ``placements`` put the instances (most common model, their nodes)."""
        if not placements:
            return self
        model = Counter(p.model for p in placements).most_common(1)[0][0]
        nodes = tuple(dict.fromkeys(p.nomad_node_id for p in placements if p.nomad_node_id))
        return replace(self, preferred_model=model, preferred_nodes=nodes)


def render_chute_job(manifest: Manifest, release: ChuteRelease, settings: RenderSettings) -> dict[str, Any]:
    """The service job that runs ``release.count`` instances of the chute (the ``Job`` object, not wrapped)."""
    cid = _check_identity(manifest)
    _check_release(release)
    job = _job_skeleton(manifest, release, settings, job_id(cid), "service")
    job["Update"] = {
        "MaxParallel": 1,
        "HealthCheck": "checks",
        "MinHealthyTime": 10 * _NS,
        "HealthyDeadline": settings.healthy_deadline_s * _NS,
        # Nomad wants it above the healthy deadline; a rollout whose instance missed that deadline fails
        # after as long again (at most 10 minutes) without progress.
        "ProgressDeadline": (settings.healthy_deadline_s + min(600, settings.healthy_deadline_s)) * _NS,
        "AutoRevert": False,
    }
    affinities = []
    if release.preferred_model is not None:
        affinities.append(_affinity(MODEL_META, "set_contains_any", _known_model(release.preferred_model), 100))
    if release.preferred_nodes:
        nodes = ",".join(_literal(n, "preferred node id") for n in release.preferred_nodes)
        affinities.append(_affinity(NODE_ID, "set_contains_any", nodes, 50))
    if affinities:
        job["Affinities"] = affinities
    task = _task(manifest, release, settings, args=[], nomad_job_id=job["ID"])
    job["TaskGroups"] = [
        {
            "Name": GROUP,
            "Count": release.count,
            "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": PORT_LABEL}]}],
            "Services": [_service(manifest, release, settings)],
            "RestartPolicy": {"Attempts": 3, "Interval": 1800 * _NS, "Delay": 15 * _NS, "Mode": "fail"},
            "ReschedulePolicy": {
                "Attempts": 0,
                "Interval": 0,
                "Delay": 30 * _NS,
                "DelayFunction": "exponential",
                "MaxDelay": 600 * _NS,
                "Unlimited": True,
            },
            "EphemeralDisk": {"SizeMB": settings.disk_mb},
            "ShutdownDelay": settings.shutdown_delay_s * _NS,
            "Meta": {"chute_id": cid},
            "Tasks": [task],
        }
    ]
    return job


def render_batch_job(
    manifest: Manifest, job_name: str, release: ChuteRelease, settings: RenderSettings
) -> dict[str, Any]:
    """The parameterized batch job that runs the chute's job ``job_name`` once per dispatch.

    Dispatch it with a JSON payload (written to ``$NOMAD_TASK_DIR/payload.json``) and ``Meta.run_id``; the
    runtime is started with ``--job NAME`` and sees the run id as ``CHUTES_JOB_RUN_ID``. The run's token
    (``CHUTES_RUN_TOKEN``, which uploads the run's outputs until the run has finished) is no part of the job or
    the dispatch: a second template picks it from the job's Nomad Variable by that run id (``secret_env``).
    """
    cid = _check_identity(manifest)
    _check_release(release)
    spec = _job_spec(manifest, job_name)
    job = _job_skeleton(manifest, release, settings, batch_job_id(cid, spec.name), "batch")
    job["ParameterizedJob"] = {"Payload": "required", "MetaRequired": [RUN_ID_META]}
    job["Meta"]["chute_job"] = spec.name
    task = _task(manifest, release, settings, args=["--job", spec.name], nomad_job_id=job["ID"])
    task["DispatchPayload"] = {"File": PAYLOAD_FILE}
    task["Env"]["CHUTES_JOB_RUN_ID"] = "${NOMAD_META_" + RUN_ID_META + "}"
    task["Templates"].append(run_template_block(job["ID"], RUN_ID_META))
    group: dict[str, Any] = {
        "Name": BATCH_GROUP,
        "Count": 1,
        # A run is not retried behind the user's back: it may have side effects; the run records the failure.
        "RestartPolicy": {"Attempts": 0, "Interval": 600 * _NS, "Delay": 15 * _NS, "Mode": "fail"},
        "ReschedulePolicy": {"Attempts": 0, "Interval": 0, "Unlimited": False},
        "EphemeralDisk": {"SizeMB": settings.disk_mb},
        "Meta": {"chute_id": cid, "chute_job": spec.name},
        "Tasks": [task],
    }
    if spec.ports:
        group["Networks"] = [{"Mode": "host", "DynamicPorts": [{"Label": p.name, "To": p.port} for p in spec.ports]}]
    job["TaskGroups"] = [group]
    return job


def _job_skeleton(
    manifest: Manifest, release: ChuteRelease, settings: RenderSettings, id_: str, type_: str
) -> dict[str, Any]:
    selector = manifest.node_selector
    job: dict[str, Any] = {
        "ID": id_,
        "Name": id_,
        "Type": type_,
        "Priority": settings.priority,
        "Datacenters": [_literal(dc, "datacenter") for dc in settings.datacenters],
        "Meta": {
            "chute_id": manifest.chute_id,
            "chute_version": chute_version(release.bundle_sha256),
            "chute_name": manifest.name,
            "username": manifest.username,
            "managed_by": "chutes",
            SECRETS_META: ",".join(sorted(release.secret_names)),
        },
        "Constraints": [
            {
                "LTarget": MODEL_META,
                "Operand": "set_contains_any",
                "RTarget": ",".join(_known_model(m) for m in selector.eligible_gpus),
            }
        ],
    }
    if settings.region:
        job["Region"] = _literal(settings.region, "region")
    if settings.namespace:
        job["Namespace"] = _literal(settings.namespace, "namespace")
    return job


def task_driver(release: ChuteRelease, settings: RenderSettings) -> TaskDriver:
    """The Nomad driver of a chute's task: the operator's choice, else docker exactly when an image was built."""
    if settings.driver == "auto":
        return "docker" if release.image_ref else "raw_exec"
    if settings.driver not in ("raw_exec", "docker"):
        raise RenderError(f"unknown task driver {settings.driver!r}: use auto, raw_exec or docker")
    return settings.driver


def _driver_config(
    manifest: Manifest, release: ChuteRelease, settings: RenderSettings, driver: TaskDriver, args: list[str]
) -> dict[str, Any]:
    """The task's ``Config``: the runtime's command on the node (raw_exec), or in the image (docker)."""
    if driver == "raw_exec":
        command = [_literal(part, "runtime command") for part in settings.runtime_command]
        if not command:
            raise RenderError("runtime_command is empty: set the command that starts `python -m chutes.runtime`")
        return {"command": command[0], "args": command[1:] + args}
    command = [_literal(part, "container command") for part in settings.container_command]
    if not command:
        raise RenderError("container_command is empty: set the command that starts `python -m chutes.runtime`")
    # By digest when built (what was pushed is what runs); a forced docker driver without a build runs the
    # manifest's reference as is, which must then contain the runtime.
    config: dict[str, Any] = {
        "image": _image_ref(release.image_ref or manifest.image.ref),
        "command": command[0],
        "args": command[1:] + args,
        "image_pull_timeout": f"{settings.image_pull_timeout_s}s",
        # catatonit/tini as PID 1: signals reach the runtime and exited children are reaped.
        "init": True,
        "pids_limit": settings.container_pids_limit,
        "shm_size": settings.container_shm_mb * 1024 * 1024,
        "security_opt": ["no-new-privileges"],
        "labels": {"io.chutes.chute_id": manifest.chute_id},
        # Docker's own copy of the output, bounded (Nomad's LogConfig rotates the copy it collects).
        "logging": {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}},
    }
    # No `runtime`: for a task with GPUs Nomad switches to the NVIDIA runtime itself (and refuses any other),
    # and no `privileged`, `volumes`, `mount` or `devices`: the allocated GPUs are the only host access.
    if not args:
        config["ports"] = [PORT_LABEL]
    return config


def _task(
    manifest: Manifest, release: ChuteRelease, settings: RenderSettings, args: list[str], nomad_job_id: str
) -> dict[str, Any]:
    selector = manifest.node_selector
    driver = task_driver(release, settings)
    config = _driver_config(manifest, release, settings, driver, args)
    scheduler_url = settings.scheduler_url
    if driver == "docker" and settings.container_scheduler_url:
        scheduler_url = settings.container_scheduler_url
    env = {
        _literal(k, "environment name"): _literal(v, f"environment value of {k}") for k, v in settings.extra_env.items()
    }
    if driver == "docker":
        env["CHUTES_HOST"] = "0.0.0.0"  # inside the container; NOMAD_IP_http is the host's address there
    env.update(
        {
            "CHUTES_CHUTE_ID": manifest.chute_id,
            "CHUTES_SCHEDULER_URL": _literal(scheduler_url, "scheduler URL"),
            "CHUTES_BUNDLE_SHA256": release.bundle_sha256,
        }
    )
    return {
        "Name": TASK,
        "Driver": driver,
        "Config": config,
        "Env": env,
        "Templates": [template_block(nomad_job_id, release.bundle_sha256, release.secret_names)],
        "KillSignal": "SIGTERM",
        "KillTimeout": settings.kill_timeout_s * _NS,
        "Resources": {
            "CPU": settings.cpu_mhz_per_gpu * selector.gpu_count,
            "MemoryMB": settings.memory_mb_per_gpu * selector.gpu_count,
            "Devices": [
                {
                    "Name": DEVICE,
                    "Count": selector.gpu_count,
                    "Constraints": [
                        {
                            "LTarget": "${device.attr.memory}",
                            "Operand": ">=",
                            "RTarget": f"{min_vram_mib(selector.min_vram_gb_per_gpu)} MiB",
                        }
                    ],
                }
            ],
        },
        "LogConfig": {"MaxFiles": 5, "MaxFileSizeMB": 20},
    }


def _service(manifest: Manifest, release: ChuteRelease, settings: RenderSettings) -> dict[str, Any]:
    return {
        "Name": service_name(manifest.chute_id),
        "Provider": "consul",
        "PortLabel": PORT_LABEL,
        "Tags": [SERVICE_TAG, f"user:{manifest.username}", f"chute:{manifest.name}"],
        "Meta": {"chute_id": manifest.chute_id, "chute_version": chute_version(release.bundle_sha256)},
        "Checks": [
            {
                "Name": "ready",
                "Type": "http",
                "Path": READY_PATH,
                "PortLabel": PORT_LABEL,
                "Interval": settings.check_interval_s * _NS,
                "Timeout": settings.check_timeout_s * _NS,
            }
        ],
    }


def _affinity(target: str, operand: str, value: str, weight: int) -> dict[str, Any]:
    return {"LTarget": target, "Operand": operand, "RTarget": value, "Weight": weight}


def _check_identity(manifest: Manifest) -> str:
    """The manifest's names, re-checked (a Manifest can be built without validation) → its chute id."""
    try:
        validate_username(manifest.username)
        validate_chute_name(manifest.name)
    except ValueError as exc:
        raise RenderError(str(exc)) from exc
    if manifest.chute_id != compute_chute_id(manifest.username, manifest.name):
        raise RenderError("chute_id does not match username and name")
    return manifest.chute_id


def _check_release(release: ChuteRelease) -> None:
    if not _SHA256.fullmatch(release.bundle_sha256):
        raise RenderError("bundle_sha256 must be 64 lower-case hex digits")
    if not 0 <= release.count <= 1000:
        raise RenderError(f"instance count {release.count} is out of range (0..1000)")
    for name in release.secret_names:
        try:
            validate_name(name)
        except SecretInputError as exc:
            raise RenderError(str(exc)) from None
    if release.image_ref is not None and "@sha256:" not in _image_ref(release.image_ref):
        raise RenderError(f"built image {release.image_ref!r} is not pinned by digest (…@sha256:<digest>)")


def _job_spec(manifest: Manifest, job_name: str) -> JobSpec:
    if not JOB_NAME_RE.fullmatch(job_name):
        raise RenderError(f"invalid job name {job_name!r}")
    for spec in manifest.jobs:
        if spec.name == job_name:
            return spec
    raise RenderError(f"chute {manifest.name!r} has no job {job_name!r}")


def _known_model(model: str) -> str:
    if model not in gpus.CATALOG:
        raise RenderError(f"unknown GPU model {model!r}")
    return model


def _image_ref(ref: str) -> str:
    if len(ref) > 512 or not _IMAGE_REF.fullmatch(ref):
        raise RenderError(
            f"invalid image reference {ref!r}: expected [registry/]name[:tag][@sha256:digest] in lower case"
        )
    return ref


def _literal(value: str, what: str) -> str:
    """``value`` unchanged when Nomad will take it literally; RenderError when it would be interpolated."""
    if _INTERPOLATION.search(value):
        raise RenderError(f"the {what} contains '${{', which Nomad would interpolate at run time: {value!r}")
    if _CONTROL.search(value):
        raise RenderError(f"the {what} contains control characters: {value!r}")
    return value
