"""Settings of one runtime process, resolved from command-line options and the environment.

Pure: ``resolve_serve`` and ``ClusterEnv.from_environ`` read a mapping, not ``os.environ``, so they are tested
without touching the process. Precedence: option > environment > default.

Environment (DESIGN.md, "Runtime environment"; docs/internal-contracts.md, "Runtime in a cluster"):

- ``CHUTES_INVOKE_SECRET``: verifies gateway signatures (``--invoke-secret`` overrides).
- ``NOMAD_PORT_http``: the port when ``--port`` is not given (else 8000).
- ``CHUTES_HOST``: the address to bind when ``--host`` is not given; in a cluster set it to ``0.0.0.0`` for
  the docker driver (inside a container ``NOMAD_IP_http`` is the host's address, not one it can bind).
- ``NOMAD_IP_http``: the address to bind in a cluster (raw_exec), when neither of the above is set.
- ``CHUTES_CORD_TIMEOUT`` (seconds, default 1800), ``CHUTES_DRAIN_TIMEOUT`` (seconds, default 30): Nomad's
  ``kill_timeout`` for the task must be longer than the drain timeout or Nomad kills the drain.
- ``CHUTES_MAX_HEADER_BYTES`` ... (``chutes.core.edge.limits``), ``CHUTES_MAX_JSON_DEPTH`` (default 64): limits on
  what a connection may send.
- ``CHUTES_SCHEDULER_URL``, ``CHUTES_INSTANCE_TOKEN``, ``CHUTES_BUNDLE_SHA256``, ``CHUTES_CHUTE_ID``,
  ``NOMAD_TASK_DIR``, ``CHUTES_JOB_RUN_ID``: where the chute comes from when no FILE:ATTR is given;
  ``CHUTES_RUN_TOKEN``: uploads a job run's outputs (valid for that run, until it has finished).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chutes.core.edge import limits as edge_limits
from chutes.core.edge.limits import EdgeLimits
from chutes.core.errors import HintedError

DEFAULT_PORT = 8000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_CORD_TIMEOUT = 1800.0
DEFAULT_DRAIN_TIMEOUT = 30.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 64


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
        task_dir = env.get("NOMAD_TASK_DIR")
        return cls(
            scheduler_url=(env.get("CHUTES_SCHEDULER_URL") or "").rstrip("/") or None,
            instance_token=env.get("CHUTES_INSTANCE_TOKEN") or None,
            bundle_sha256=(env.get("CHUTES_BUNDLE_SHA256") or "").strip().lower() or None,
            chute_id=env.get("CHUTES_CHUTE_ID") or None,
            task_dir=Path(task_dir) if task_dir else None,
            job_run_id=env.get("CHUTES_JOB_RUN_ID") or None,
            run_token=env.get("CHUTES_RUN_TOKEN") or None,
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
    if port is not None:
        resolved_port = _port("--port", port)
    elif env.get("NOMAD_PORT_http"):
        resolved_port = _port("NOMAD_PORT_http", env["NOMAD_PORT_http"])
    else:
        resolved_port = DEFAULT_PORT
    resolved_host = host or env.get("CHUTES_HOST") or env.get("NOMAD_IP_http") or DEFAULT_HOST
    secret = invoke_secret or env.get("CHUTES_INVOKE_SECRET") or None
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
    raw_depth = env.get("CHUTES_MAX_JSON_DEPTH") or str(DEFAULT_MAX_JSON_DEPTH)
    if not raw_depth.isdigit() or int(raw_depth) < 1:
        raise ConfigError(f"CHUTES_MAX_JSON_DEPTH must be a positive whole number, got {raw_depth!r}")
    return ServeConfig(
        host=resolved_host,
        port=resolved_port,
        dev=dev,
        invoke_secret=secret,
        cord_timeout=_seconds("cord timeout", cord_timeout or env.get("CHUTES_CORD_TIMEOUT"), DEFAULT_CORD_TIMEOUT),
        drain_timeout=_seconds(
            "drain timeout", drain_timeout or env.get("CHUTES_DRAIN_TIMEOUT"), DEFAULT_DRAIN_TIMEOUT
        ),
        max_body_bytes=body_limit,
        port_file=port_file,
        access_log=access_log,
        log_level=log_level,
        limits=limits,
        max_json_depth=int(raw_depth),
    )
