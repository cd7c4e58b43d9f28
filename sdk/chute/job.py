"""Job: a run-to-completion method of a chute, made by ``@chute.job(...)`` (dispatched, not served).

Rules as in Chutes: ``timeout`` is None (no limit) or 30..86400 seconds; each ``Port`` is 2202 (ssh) or in
8002..65535, with no duplicate numbers or names; ``ssh=True`` adds ``Port("ssh", 2202, "tcp")``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chutes import schema
from chutes.chute.errors import ChuteError
from chutes.manifest import JOB_NAME_RE, JobSpec, PortSpec

if TYPE_CHECKING:
    from chutes.chute.base import Chute

SSH_PORT = 2202
MIN_PORT = 8002
MIN_TIMEOUT = 30
MAX_TIMEOUT = 86400


class Port(BaseModel):
    """A port a job exposes while it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    port: int
    proto: Literal["tcp", "udp", "http"] = "tcp"

    @field_validator("port")
    @classmethod
    def _range(cls, value: int) -> int:
        if value == SSH_PORT or MIN_PORT <= value <= 65535:
            return value
        raise ValueError(f"port {value} is not allowed: use {SSH_PORT} (ssh) or a port in {MIN_PORT}-65535")

    def spec(self) -> PortSpec:
        return PortSpec(name=self.name, port=self.port, proto=self.proto)


def _ports(ports: Sequence[Port | dict[str, Any]] | None, ssh: bool, where: str) -> list[Port]:
    result: list[Port] = []
    for item in ports or ():
        try:
            port = item if isinstance(item, Port) else Port.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ChuteError(f"invalid port {item!r} of {where}: {message}") from exc
        result.append(port)
    if ssh:
        result.append(Port(name="ssh", port=SSH_PORT, proto="tcp"))
    numbers = [str(p.port) for p in result]
    names = [p.name for p in result]
    for label, values in (("number", numbers), ("name", names)):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            hint = "ssh=True already adds port 2202 named 'ssh'" if ssh else None
            raise ChuteError(f"duplicate port {label} {', '.join(dupes)} in {where}", hint=hint)
    return result


class Job:
    """One job method of a chute. Calling it runs the function locally with the chute as ``self``."""

    def __init__(
        self,
        chute: Chute,
        func: Callable[..., Any],
        *,
        ports: Sequence[Port | dict[str, Any]] | None = None,
        timeout: int | None = None,
        upload: bool = True,
        ssh: bool = False,
    ) -> None:
        if not callable(func):
            raise ChuteError(f"@chute.job decorates a function, got {type(func).__name__}")
        self._chute = chute
        self.func = func
        self.name: str = func.__name__
        where = f"job {self.name!r}"
        if not JOB_NAME_RE.fullmatch(self.name):
            raise ChuteError(f"invalid job name {self.name!r}: a job is named after its function (an identifier)")
        if timeout is not None and (
            not isinstance(timeout, int) or isinstance(timeout, bool) or not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT
        ):
            raise ChuteError(
                f"timeout of {where} must be None or {MIN_TIMEOUT}-{MAX_TIMEOUT} seconds, got {timeout!r}",
                hint="use timeout=None for a job without a time limit",
            )
        self.timeout = timeout
        self.upload = bool(upload)
        self.ssh = bool(ssh)
        self.ports = _ports(ports, self.ssh, where)
        try:
            spec = schema.derive_input(func)
        except schema.SchemaError as exc:
            raise ChuteError(f"{where}: {exc}", hint=exc.hint) from exc
        self.input_model = spec.model
        self.takes_model = spec.takes_model

    @property
    def chute(self) -> Chute:
        """The chute this job belongs to."""
        return self._chute

    def spec(self) -> JobSpec:
        """The job's entry in the manifest."""
        return JobSpec(name=self.name, timeout=self.timeout, upload=self.upload, ports=[p.spec() for p in self.ports])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here, with the chute as ``self``."""
        return self.func(self._chute, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<Job {self.name} timeout={self.timeout} ports={[p.port for p in self.ports]}>"
