"""The ``docker`` task driver's ``Config`` block, parsed and checked (pure), and image reference helpers.

Nomad's docker driver decodes ``Config`` against its HCL spec on the client; the devcluster checks it when the
job is registered (earlier than Nomad, which fails the task) and keeps Nomad's wording where it has one
("Docker privileged mode is disabled on this Nomad agent"). Keys Nomad knows but the devcluster's podman-based
driver does not implement are refused by name rather than silently ignored, so a job that relies on them fails
here instead of behaving differently on a real cluster.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chutes.devcluster.durations import DurationError, parse_duration

DEFAULT_PULL_TIMEOUT_S = 300.0  # Nomad's image_pull_timeout default, "5m"
DEFAULT_REGISTRY = "docker.io"

# Every key of Nomad's docker driver config (drivers/docker/config.go), so that a key the devcluster does not
# implement is told apart from a misspelt one.
NOMAD_KEYS = frozenset(
    {
        "image", "advertise_ipv6_address", "args", "auth", "auth_soft_fail", "cap_add", "cap_drop", "command",
        "container_exists_attempts", "cgroupns", "cpuset_cpus", "cpu_hard_limit", "cpu_cfs_period", "devices",
        "dns_search_domains", "dns_options", "dns_servers", "entrypoint", "extra_hosts", "force_pull",
        "group_add", "healthchecks", "hostname", "init", "interactive", "ipc_mode", "ipv4_address",
        "ipv6_address", "isolation", "labels", "load", "logging", "mac_address", "memory_hard_limit", "mount",
        "mounts", "network_aliases", "network_mode", "oom_score_adj", "pid_mode", "pids_limit", "port_map",
        "ports", "privileged", "readonly_rootfs", "runtime", "security_opt", "shm_size", "storage_opt",
        "sysctl", "tty", "ulimit", "uts_mode", "userns_mode", "volumes", "volume_driver", "work_dir",
        "image_pull_timeout", "use_isolation",
    }
)  # fmt: skip
SUPPORTED_KEYS = frozenset(
    {
        "image", "args", "auth", "auth_soft_fail", "cap_drop", "command", "cpu_hard_limit", "entrypoint",
        "force_pull", "healthchecks", "image_pull_timeout", "init", "labels", "logging", "memory_hard_limit",
        "network_mode", "pids_limit", "ports", "privileged", "readonly_rootfs", "runtime", "security_opt",
        "shm_size", "ulimit", "work_dir",
    }
)  # fmt: skip
HOST_MOUNT_KEYS = frozenset({"volumes", "mount", "mounts", "devices", "volume_driver"})
ALLOWED_RUNTIMES = ("runc", "nvidia")  # Nomad's allow_runtimes default
_NO_NEW_PRIVILEGES = re.compile(r"^no-new-privileges(?:[:=]true)?$")
_ENV_NAME = re.compile(r"^[^=\s#][^=\n\r\x00]*$")


class DockerConfigError(ValueError):
    """The task's docker ``Config`` cannot run; ``problems`` lists each reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class RegistryAuth:
    username: str
    password: str


@dataclass(frozen=True)
class DockerTaskConfig:
    """What the devcluster's docker driver uses from a task's ``Config``."""

    image: str
    command: str | None = None
    args: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    ports: tuple[str, ...] = ()
    auth: RegistryAuth | None = None
    auth_soft_fail: bool = False
    force_pull: bool = False
    pull_timeout_s: float = DEFAULT_PULL_TIMEOUT_S
    labels: Mapping[str, str] = field(default_factory=dict)
    pids_limit: int | None = None
    shm_size: int | None = None
    init: bool = False
    work_dir: str | None = None
    cpu_hard_limit: bool = False
    memory_hard_limit: int | None = None
    runtime: str | None = None
    readonly_rootfs: bool = False
    no_new_privileges: bool = False
    cap_drop: tuple[str, ...] = ()
    ulimits: Mapping[str, str] = field(default_factory=dict)


def _one_block(value: Any) -> Any:
    """HCL2 blocks arrive as an object, HCL1-style ones as a list holding one object."""
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def _string_map(value: Any, key: str, problems: list[str]) -> dict[str, str]:
    """Nomad declares map options as ``list(map(string))``: accept ``{"k": "v"}`` and ``[{"k": "v"}]``."""
    items: list[Any] = value if isinstance(value, list) else [value]
    out: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict):
            problems.append(f"{key}: expected a map of strings")
            return {}
        for k, v in item.items():
            if not isinstance(k, str) or not isinstance(v, str | int | float | bool):
                problems.append(f"{key}: expected a map of strings")
                return {}
            out[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _string_list(value: Any, key: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{key}: expected a list of strings")
        return ()
    return tuple(value)


def _bool(value: Any, key: str, problems: list[str]) -> bool:
    if not isinstance(value, bool):
        problems.append(f"{key}: expected a bool")
        return False
    return value


def _int(value: Any, key: str, problems: list[str], minimum: int = 0) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.append(f"{key}: expected an integer >= {minimum}")
        return None
    return value


def parse_docker_config(config: Mapping[str, Any]) -> DockerTaskConfig:
    """The task's ``Config`` as a :class:`DockerTaskConfig`; DockerConfigError lists every problem."""
    problems: list[str] = []
    for key in config:
        if key not in NOMAD_KEYS:
            problems.append(f'No argument or block type is named "{key}"')
        elif key in HOST_MOUNT_KEYS:
            problems.append(f"{key}: host mounts and devices are disabled on this agent (volumes.enabled = false)")
        elif key not in SUPPORTED_KEYS:
            problems.append(f"{key}: not supported by the devcluster's docker driver")
    image = config.get("image")
    if not isinstance(image, str) or not image.strip():
        problems.append("image: a non-empty image reference is required")
        image = ""
    elif "${" not in image and not valid_image_ref(image):  # ${...} is interpolated when the task starts
        problems.append(f"image: invalid reference format {image!r}")
    command = config.get("command")
    if command is not None and not isinstance(command, str):
        problems.append("command: expected a string")
        command = None
    args = _string_list(config.get("args", []), "args", problems)
    entrypoint: tuple[str, ...] | None = None
    if "entrypoint" in config:
        entrypoint = _string_list(config["entrypoint"], "entrypoint", problems)
    ports = _string_list(config.get("ports", []), "ports", problems)
    auth: RegistryAuth | None = None
    if "auth" in config:
        block = _one_block(config["auth"])
        if not isinstance(block, dict) or not isinstance(block.get("username", ""), str):
            problems.append("auth: expected a block with username and password")
        else:
            auth = RegistryAuth(str(block.get("username", "")), str(block.get("password", "")))
    pull_timeout_s = DEFAULT_PULL_TIMEOUT_S
    if "image_pull_timeout" in config:
        raw = config["image_pull_timeout"]
        try:
            pull_timeout_s = parse_duration(str(raw))
        except DurationError as exc:
            problems.append(f"image_pull_timeout: {exc}")
        if pull_timeout_s <= 0:
            problems.append("image_pull_timeout: must be positive")
    labels = _string_map(config.get("labels", {}), "labels", problems)
    if "logging" in config:  # checked, not applied: the output goes to Nomad's log files (docs/devcluster.md)
        block = _one_block(config["logging"])
        if not isinstance(block, dict):
            problems.append("logging: expected a block with type and config")
        else:
            kind = block.get("type", "json-file")
            if kind not in ("json-file", "local", "none", ""):
                problems.append(f"logging: type {kind!r} is not supported by the devcluster (json-file, local, none)")
            _string_map(_one_block(block.get("config", {})), "logging.config", problems)
    runtime = config.get("runtime")
    if runtime is not None and runtime not in ALLOWED_RUNTIMES:
        problems.append(f'requested runtime "{runtime}" is not allowed')
    if config.get("privileged") is True:
        problems.append("Docker privileged mode is disabled on this Nomad agent")
    network_mode = config.get("network_mode", "")
    if network_mode not in ("", "bridge", "default"):
        problems.append(f"network_mode {network_mode!r}: only the default (bridge) is supported by the devcluster")
    no_new_privileges = False
    for option in _string_list(config.get("security_opt", []), "security_opt", problems):
        if _NO_NEW_PRIVILEGES.match(option):
            no_new_privileges = True
        else:
            problems.append(f"security_opt {option!r}: only no-new-privileges is supported by the devcluster")
    healthchecks = _one_block(config.get("healthchecks", {}))
    if not isinstance(healthchecks, dict) or set(healthchecks) - {"disable"}:
        problems.append("healthchecks: only {disable = true|false} is accepted")
    result = DockerTaskConfig(
        image=image,
        command=command or None,
        args=args,
        entrypoint=entrypoint,
        ports=ports,
        auth=auth,
        auth_soft_fail=_bool(config.get("auth_soft_fail", False), "auth_soft_fail", problems),
        force_pull=_bool(config.get("force_pull", False), "force_pull", problems),
        pull_timeout_s=pull_timeout_s,
        labels=labels,
        pids_limit=_int(config["pids_limit"], "pids_limit", problems) if "pids_limit" in config else None,
        shm_size=_int(config["shm_size"], "shm_size", problems, 1) if "shm_size" in config else None,
        init=_bool(config.get("init", False), "init", problems),
        work_dir=str(config["work_dir"]) if config.get("work_dir") else None,
        cpu_hard_limit=_bool(config.get("cpu_hard_limit", False), "cpu_hard_limit", problems),
        memory_hard_limit=(
            _int(config["memory_hard_limit"], "memory_hard_limit", problems, 1)
            if "memory_hard_limit" in config
            else None
        ),
        runtime=runtime if isinstance(runtime, str) else None,
        readonly_rootfs=_bool(config.get("readonly_rootfs", False), "readonly_rootfs", problems),
        no_new_privileges=no_new_privileges,
        cap_drop=_string_list(config.get("cap_drop", []), "cap_drop", problems),
        ulimits=_string_map(config.get("ulimit", {}), "ulimit", problems),
    )
    if problems:
        raise DockerConfigError(problems)
    return result


def docker_config_problems(config: Mapping[str, Any] | None) -> list[str]:
    """Every reason ``config`` cannot run under the docker driver ([] when it can)."""
    try:
        parse_docker_config(config or {})
    except DockerConfigError as exc:
        return exc.problems
    return []


def check_env_name(name: str) -> bool:
    """An environment name that an env file can carry (no ``=``, no line breaks, no leading ``#``/space)."""
    return bool(_ENV_NAME.match(name))


# -- image references -----------------------------------------------------------------------------------------

_REF = re.compile(
    r"^(?:(?P<registry>(?:localhost|\[[0-9a-fA-F:]+\]|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+|[a-zA-Z0-9-]+(?=:[0-9]+/))"
    r"(?::[0-9]{1,5})?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port]
    path: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.path}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def host(self) -> str:
        """The registry's host without its port (brackets removed from an IPv6 literal)."""
        if self.registry.startswith("["):
            return self.registry[1 : self.registry.index("]")]
        return self.registry.split(":", 1)[0]

    @property
    def always_pull(self) -> bool:
        """Nomad pulls on every start when the tag is ``latest`` or omitted (and no digest pins the image)."""
        return self.digest is None and (self.tag is None or self.tag == "latest")


def valid_image_ref(text: str) -> bool:
    return len(text) <= 512 and _REF.match(text) is not None


def parse_image_ref(text: str) -> ImageRef:
    """``text`` fully qualified, as Docker reads it: no registry means Docker Hub (``library/`` for one path part)."""
    m = _REF.match(text)
    if m is None or len(text) > 512:
        raise ValueError(f"invalid image reference {text!r}")
    registry = m.group("registry")
    path = m.group("path")
    if registry is None:
        registry = DEFAULT_REGISTRY
        if "/" not in path:
            path = f"library/{path}"
    return ImageRef(registry=registry, path=path, tag=m.group("tag"), digest=m.group("digest"))


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_verify(ref: ImageRef, insecure_registries: frozenset[str] = frozenset()) -> bool:
    """Whether to verify the registry's TLS certificate: not for loopback registries, nor for ones listed
    insecure (by ``host`` or ``host:port``), as Docker treats ``127.0.0.0/8`` and ``--insecure-registry``."""
    if is_loopback_host(ref.host):
        return False
    return ref.registry not in insecure_registries and ref.host not in insecure_registries
