"""Settings of one runtime process, resolved from command-line options and the environment.

Pure: ``resolve_serve`` and ``ClusterEnv.from_environ`` read a mapping, not ``os.environ``, so they are tested
without touching the process. Precedence: option > environment > default.

Every setting is declared once in :data:`SETTINGS` (``chutes run --help`` and docs/configuration.md come from
it); the environment is the contract of DESIGN.md, "Runtime environment" (docs/internal-contracts.md, "Runtime
in a cluster"). Nomad's ``kill_timeout`` for the task must be longer than the drain timeout or Nomad kills the
drain. The edge limits (``CHUTES_MAX_HEADER_BYTES`` ...) are ``chutes.core.edge.limits``'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chutes.core.edge import limits as edge_limits
from chutes.core.edge.limits import EdgeLimits
from chutes.core.errors import HintedError
from chutes.core.settings import Setting, Settings

DEFAULT_PORT = 8000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_CORD_TIMEOUT = 1800.0
DEFAULT_DRAIN_TIMEOUT = 30.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 64


#: The runtime's settings: its options and the environment a chute's Nomad task gives it.
SETTINGS = Settings(
    "chutes run",
    [
        Setting("port", "port to listen on", env="NOMAD_PORT_http", flag="--port", default=DEFAULT_PORT, parse=int),
        Setting(
            "host",
            "address to bind; set `0.0.0.0` inside a docker task",
            env="CHUTES_HOST",
            flag="--host",
            default=DEFAULT_HOST,
            shown_default="`$NOMAD_IP_http`, else `127.0.0.1`",
        ),
        Setting("ip", "address to bind in a cluster (raw_exec) when `CHUTES_HOST` is not set", env="NOMAD_IP_http"),
        Setting("dev", "serve without request signatures (local development)", flag="--dev", const=True, default=False),
        Setting(
            "invoke_secret",
            "secret that verifies the gateway's signatures",
            env="CHUTES_INVOKE_SECRET",
            flag="--invoke-secret",
            shown_default="required unless `--dev`",
        ),
        Setting(
            "cord_timeout",
            "seconds a cord call may take (past it: 504)",
            env="CHUTES_CORD_TIMEOUT",
            flag="--cord-timeout",
            default=DEFAULT_CORD_TIMEOUT,
            parse=float,
        ),
        Setting(
            "drain_timeout",
            "seconds in-flight calls get after SIGTERM; keep Nomad's `kill_timeout` longer",
            env="CHUTES_DRAIN_TIMEOUT",
            flag="--drain-timeout",
            default=DEFAULT_DRAIN_TIMEOUT,
            parse=float,
        ),
        Setting(
            "max_body_bytes",
            "largest request body accepted, bytes",
            flag="--max-body-bytes",
            default=DEFAULT_MAX_BODY_BYTES,
            parse=int,
            shown_default="64 MiB",
        ),
        Setting(
            "max_json_depth",
            "cord inputs nested deeper are refused (422)",
            env="CHUTES_MAX_JSON_DEPTH",
            default=DEFAULT_MAX_JSON_DEPTH,
            parse=int,
        ),
        Setting("port_file", "write the bound port to this file once listening", flag="--port-file", parse=Path),
        Setting("access_log", "log every request", flag="--access-log", const=True, default=False),
        Setting("log_level", "debug, info, warning or error", flag="--log-level", default="info"),
        Setting("scheduler_url", "where the bundle comes from when no FILE:ATTR is given", env="CHUTES_SCHEDULER_URL"),
        Setting("instance_token", "fetches the bundle (from the job's Nomad Variable)", env="CHUTES_INSTANCE_TOKEN"),
        Setting("bundle_sha256", "the bundle to fetch and verify", env="CHUTES_BUNDLE_SHA256"),
        Setting("chute_id", "the chute this instance serves", env="CHUTES_CHUTE_ID"),
        Setting("task_dir", "the Nomad task's folder (a job's `payload.json` and `outputs/`)", env="NOMAD_TASK_DIR"),
        Setting("job", "run this job once instead of serving cords", flag="--job"),
        Setting("input", "a job's input: JSON, @FILE.json, or - for stdin", flag="--input"),
        Setting("output_dir", "folder for a job's outputs and status.json", flag="--output-dir", parse=Path),
        Setting("job_run_id", "the job run to upload the outputs of", env="CHUTES_JOB_RUN_ID"),
        Setting("run_token", "uploads a job run's outputs (valid until the run has finished)", env="CHUTES_RUN_TOKEN"),
    ],
)


class ConfigError(HintedError):
    """A setting that is missing or invalid; the message says what to set."""


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """How to serve one chute over HTTP."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    dev: bool = False
    invoke_secret: str | None = None
    cord_timeout: float = DEFAULT_CORD_TIMEOUT
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    port_file: Path | None = None
    access_log: bool = False
    log_level: str = "info"
    # Connection limits (CHUTES_MAX_HEADER_BYTES ...). The idle keep-alive timeout stays longer than the idle
    # timeout of the gateway's pool, so the gateway never reuses a connection the instance is closing.
    limits: EdgeLimits = field(default_factory=EdgeLimits)
    #: JSON bodies nested deeper than this are refused (422) before they are parsed (CHUTES_MAX_JSON_DEPTH)
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH


@dataclass(frozen=True, slots=True)
class ClusterEnv:
    """What Nomad and the scheduler put in the environment of an instance (all optional here)."""

    scheduler_url: str | None = None
    instance_token: str | None = None
    bundle_sha256: str | None = None
    chute_id: str | None = None
    task_dir: Path | None = None
    job_run_id: str | None = None
    run_token: str | None = None

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> ClusterEnv:
        given = SETTINGS.from_env(env)[0]
        task_dir = given.get("task_dir")
        return cls(
            scheduler_url=(given.get("scheduler_url") or "").rstrip("/") or None,
            instance_token=given.get("instance_token"),
            bundle_sha256=(given.get("bundle_sha256") or "").lower() or None,
            chute_id=given.get("chute_id"),
            task_dir=Path(task_dir) if task_dir else None,
            job_run_id=given.get("job_run_id"),
            run_token=given.get("run_token"),
        )

    def require_bundle_source(self) -> tuple[str, str, str]:
        """(scheduler_url, instance_token, bundle_sha256), or a ConfigError naming what is missing."""
        missing = [
            name
            for name, value in (
                ("CHUTES_SCHEDULER_URL", self.scheduler_url),
                ("CHUTES_INSTANCE_TOKEN", self.instance_token),
                ("CHUTES_BUNDLE_SHA256", self.bundle_sha256),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"no chute to run: FILE:ATTR was not given and {', '.join(missing)} not set",
                "pass FILE:ATTR (e.g. app.py:chute) or run inside a chute's Nomad task",
            )
        assert self.scheduler_url and self.instance_token and self.bundle_sha256
        return self.scheduler_url, self.instance_token, self.bundle_sha256


def _seconds(name: str, raw: str | float | None, default: float) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _port(name: str, raw: str | int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a port number, got {raw!r}") from None
    if not 0 <= value <= 65535:
        raise ConfigError(f"{name} must be between 0 and 65535, got {value}")
    return value


def resolve_serve(
    env: Mapping[str, str],
    *,
    host: str | None = None,
    port: int | None = None,
    dev: bool = False,
    invoke_secret: str | None = None,
    cord_timeout: float | None = None,
    drain_timeout: float | None = None,
    max_body_bytes: int | None = None,
    port_file: Path | None = None,
    access_log: bool = False,
    log_level: str = "info",
) -> ServeConfig:
    """Combine options and environment; refuses to serve unsigned traffic unless ``dev`` is set."""
    given = SETTINGS.from_env(env)[0]  # the variables set, as text
    if port is not None:
        resolved_port = _port("--port", port)
    elif "port" in given:
        resolved_port = _port("NOMAD_PORT_http", given["port"])
    else:
        resolved_port = DEFAULT_PORT
    resolved_host = host or given.get("host") or given.get("ip") or DEFAULT_HOST
    secret = invoke_secret or given.get("invoke_secret")
    if not dev and not secret:
        raise ConfigError(
            "refusing to start: no invoke secret to verify request signatures with",
            "set CHUTES_INVOKE_SECRET or pass --invoke-secret; use --dev to serve without signatures locally",
        )
    body_limit = DEFAULT_MAX_BODY_BYTES if max_body_bytes is None else max_body_bytes
    if body_limit < 1:
        raise ConfigError(f"--max-body-bytes must be positive, got {body_limit}")
    try:
        limits = edge_limits.from_env(env)
    except edge_limits.LimitsError as exc:
        raise ConfigError(str(exc)) from None
    raw_depth = given.get("max_json_depth") or str(DEFAULT_MAX_JSON_DEPTH)
    if not raw_depth.isdigit() or int(raw_depth) < 1:
        raise ConfigError(f"CHUTES_MAX_JSON_DEPTH must be a positive whole number, got {raw_depth!r}")
    return ServeConfig(
        host=resolved_host,
        port=resolved_port,
        dev=dev,
        invoke_secret=secret,
        cord_timeout=_seconds("cord timeout", cord_timeout or given.get("cord_timeout"), DEFAULT_CORD_TIMEOUT),
        drain_timeout=_seconds("drain timeout", drain_timeout or given.get("drain_timeout"), DEFAULT_DRAIN_TIMEOUT),
        max_body_bytes=body_limit,
        port_file=port_file,
        access_log=access_log,
        log_level=log_level,
        limits=limits,
        max_json_depth=int(raw_depth),
    )
