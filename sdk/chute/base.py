"""Chute: a FastAPI application plus what the platform needs to run it (image, GPUs, cords or jobs, hooks).

Everything is checked when it is declared, so a mistake surfaces on import with a message that names the
rule, not later on a GPU node. ``manifest()`` describes the chute for the scheduler (DESIGN.md, "Manifest").
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, ValidationError

import chutes
from chutes.chute.cord import Cord
from chutes.chute.errors import ChuteError, CompatibilityWarning, DuplicatePath, ManifestError
from chutes.chute.job import Job, Port
from chutes.chute.node_selector import NodeSelector
from chutes.identity import chute_id, validate_chute_name, validate_username
from chutes.manifest import ImageSpec, Manifest

if TYPE_CHECKING:
    from chutes.image import Image

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_PRIORITY = 50


def _number(value: Any, low: float, high: float, what: str, *, integer: bool = True) -> Any:
    wrong_type = isinstance(value, bool) or not isinstance(value, int | float) or (integer and isinstance(value, float))
    if wrong_type or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ChuteError(f"{what} must be {kind} from {low:g} to {high:g}, got {value!r}")
    return value


def _text(value: Any, limit: int, what: str) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ChuteError(f"{what} must be a string of at most {limit} characters")
    return value


def _optional_text(value: Any, limit: int, what: str) -> str | None:
    return None if value is None else _text(value, limit, what)


def _node_selector(value: NodeSelector | dict[str, Any] | None) -> NodeSelector:
    if value is None:
        return NodeSelector()
    if isinstance(value, NodeSelector):
        return value
    if isinstance(value, dict):
        try:
            return NodeSelector(**value)
        except ValidationError as exc:
            raise ChuteError(f"invalid node_selector: {_first_error(exc)}") from exc
    raise ChuteError(f"node_selector must be a NodeSelector, got {type(value).__name__}")


def _first_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


class Chute(FastAPI):
    """A deployable app: ``Chute(username=..., name=..., image=..., node_selector=NodeSelector(...))``."""

    def __init__(
        self,
        username: str,
        name: str,
        image: str | Image,
        tagline: str = "",
        readme: str = "",
        standard_template: str | None = None,
        revision: str | None = None,
        node_selector: NodeSelector | dict[str, Any] | None = None,
        concurrency: int = 1,
        max_instances: int = 1,
        shutdown_after_seconds: int = 300,
        scaling_threshold: float = 0.75,
        allow_external_egress: bool = False,
        encrypted_fs: bool = False,
        passthrough_headers: dict[str, str] | None = None,
        tee: bool = False,
        lock_modules: bool | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        from chutes.image import Image, validate_image_ref

        self._username = validate_username(username)
        self._name = validate_chute_name(name)
        if isinstance(image, Image):
            self._image: str | Image = image
        elif isinstance(image, str):
            self._image = validate_image_ref(image)
        else:
            raise ChuteError(f"image must be an image reference (str) or an Image, got {type(image).__name__}")
        self._tagline = _text(tagline, 1024, "tagline")
        self._readme = _text(readme, 65536, "readme")
        self._standard_template = _optional_text(standard_template, 64, "standard_template")
        self.revision: str | None = _optional_text(revision, 128, "revision")
        self._node_selector = _node_selector(node_selector)
        self.concurrency: int = _number(concurrency, 1, 1024, "concurrency")
        self.max_instances: int = _number(max_instances, 1, 100, "max_instances")
        self.shutdown_after_seconds: int = _number(shutdown_after_seconds, 60, 604800, "shutdown_after_seconds")
        self.scaling_threshold: float = float(_number(scaling_threshold, 0, 1, "scaling_threshold", integer=False))
        self.allow_external_egress = bool(allow_external_egress)
        self.encrypted_fs = bool(encrypted_fs)
        self.passthrough_headers: dict[str, str] = dict(passthrough_headers or {})
        self.tee = bool(tee)
        # Chutes' container hardening (a bool there): recorded, not enforced here (docs: SDK compatibility).
        if lock_modules is not None and not isinstance(lock_modules, bool):
            if isinstance(lock_modules, str) or not all(isinstance(m, str) for m in lock_modules):
                raise ChuteError("lock_modules must be True, False, None or a list of module names")
            lock_modules = list(lock_modules)
        self.lock_modules: bool | list[str] | None = lock_modules
        self._cords: list[Cord] = []
        self._jobs: list[Job] = []
        self._initialized = False
        self._startup: list[tuple[int, int, Callable[..., Any]]] = []
        self._shutdown: list[tuple[int, int, Callable[..., Any]]] = []
        kwargs.setdefault("title", name)
        kwargs.setdefault("docs_url", None)
        kwargs.setdefault("redoc_url", None)
        super().__init__(**kwargs)

    # Read-only properties (as in Chutes).
    @property
    def name(self) -> str:
        return self._name

    @property
    def username(self) -> str:
        return self._username

    @property
    def uid(self) -> str:
        """The chute id: uuid5(NAMESPACE_OID, "<username>::chute::<name>")."""
        return chute_id(self._username, self._name)

    @property
    def tagline(self) -> str:
        return self._tagline

    @property
    def readme(self) -> str:
        return self._readme

    @property
    def image(self) -> str | Image:
        return self._image

    @property
    def node_selector(self) -> NodeSelector:
        return self._node_selector

    @property
    def standard_template(self) -> str | None:
        return self._standard_template

    @property
    def cords(self) -> list[Cord]:
        return list(self._cords)

    @property
    def jobs(self) -> list[Job]:
        return list(self._jobs)

    @property
    def startup_hooks(self) -> list[Callable[..., Any]]:
        """Startup hooks in run order: priority ascending, then declaration order."""
        return [hook for _, _, hook in sorted(self._startup, key=lambda item: item[:2])]

    @property
    def shutdown_hooks(self) -> list[Callable[..., Any]]:
        """Shutdown hooks in run order: priority ascending, then declaration order."""
        return [hook for _, _, hook in sorted(self._shutdown, key=lambda item: item[:2])]

    # Lifecycle hooks.
    def _hook(self, hooks: list[tuple[int, int, Callable[..., Any]]], priority: int, what: str) -> Callable[[F], F]:
        _number(priority, -(10**6), 10**6, f"{what} priority")

        def decorator(func: F) -> F:
            if not callable(func):
                raise ChuteError(f"@chute.{what}() decorates a function, got {type(func).__name__}")
            hooks.append((priority, len(hooks), func))
            return func

        return decorator

    def on_startup(self, priority: int = DEFAULT_PRIORITY) -> Callable[[F], F]:
        """Run the decorated function (sync or async, called with the chute) before serving; lower first."""
        return self._hook(self._startup, priority, "on_startup")

    def on_shutdown(self, priority: int = DEFAULT_PRIORITY) -> Callable[[F], F]:
        """Run the decorated function (sync or async, called with the chute) at shutdown; lower first."""
        return self._hook(self._shutdown, priority, "on_shutdown")

    async def initialize(self) -> None:
        """Run the startup hooks in order (sync ones in a thread), until they have all succeeded once.

        The runtime runs them itself before an instance serves; this is for scripts and tests that use the chute
        directly, as ``await chute.initialize()`` does in Chutes.
        """
        if self._initialized:
            return
        for hook in self.startup_hooks:
            result = hook(self) if inspect.iscoroutinefunction(hook) else await asyncio.to_thread(hook, self)
            if inspect.isawaitable(result):
                await result
        self._initialized = True

    # Cords and jobs.
    @overload
    def cord(self, func: Callable[..., Any], /) -> Cord: ...

    @overload
    def cord(self, func: None = None, /, **kwargs: Any) -> Callable[[Callable[..., Any]], Cord]: ...

    def cord(
        self, func: Callable[..., Any] | None = None, /, **kwargs: Any
    ) -> Cord | Callable[[Callable[..., Any]], Cord]:
        """Declare an HTTP endpoint: ``@chute.cord(public_api_path="/predict")``; returns the Cord."""

        def decorator(function: Callable[..., Any]) -> Cord:
            cord = Cord(self, function, **kwargs)
            self._add_cord(cord)
            return cord

        return decorator(func) if func is not None else decorator

    def _add_cord(self, cord: Cord) -> None:
        if self._jobs:
            raise ChuteError(
                f"cannot add cord {cord.name!r}: chute {self._name!r} has jobs, and a chute has cords or jobs, "
                "not both",
                hint="put the jobs in a chute of their own",
            )
        for other in self._cords:
            if other.path == cord.path:
                raise DuplicatePath(
                    f"cord {cord.name!r} uses path {cord.path!r}, which cord {other.name!r} already uses",
                    hint="pass a different path= (it defaults to the function name)",
                )
        same_public = self._at_public_address(cord)
        # One public address may serve a streaming and a non-streaming variant (the request's "stream" field
        # picks one), as the OpenAI-style templates do; anything else is ambiguous.
        if same_public and not (len(same_public) == 1 and same_public[0].stream != cord.stream):
            other = same_public[0]
            if not self._trailing_slash_twin(cord, other):
                raise DuplicatePath(
                    f"cord {cord.name!r} uses {cord.public_api_method} {cord.public_api_path}, which cord "
                    f"{other.name!r} already uses",
                    hint="give it another public_api_path (only a stream/non-stream pair may share one)",
                )
        self._cords.append(cord)

    def _at_public_address(self, cord: Cord) -> list[Cord]:
        key = (cord.public_api_method, cord.public_api_path)
        return [c for c in self._cords if (c.public_api_method, c.public_api_path) == key]

    def _trailing_slash_twin(self, cord: Cord, other: Cord) -> bool:
        """Serve ``cord`` at its own path when its public path differs from ``other``'s only by a trailing '/'.

        The real Chutes SDK accepts such a pair (its public paths both normalize to '/x', and the first one
        answers there); here the second answers at ``POST <its path>``, with a CompatibilityWarning saying so.
        """
        declared = (cord.declared_public_api_path, other.declared_public_api_path)
        if None in declared or declared[0] == declared[1]:
            return False
        address = (cord.public_api_method, cord.path)
        if any((c.public_api_method, c.public_api_path) == address for c in self._cords):
            return False
        warnings.warn(
            f"cords {other.name!r} and {cord.name!r} declare public_api_path {declared[1]!r} and {declared[0]!r}, "
            f"one address once the trailing '/' is dropped (as Chutes drops it): {other.name!r} answers at "
            f"{cord.public_api_method} {cord.public_api_path}, {cord.name!r} at {cord.public_api_method} {cord.path}",
            CompatibilityWarning,
            stacklevel=4,
        )
        cord.public_api_path = cord.path
        return True

    def job(
        self,
        ports: Sequence[Port | dict[str, Any]] | None = None,
        timeout: int | None = None,
        upload: bool = True,
        ssh: bool = False,
    ) -> Callable[[Callable[..., Any]], Job]:
        """Declare a job method: ``@chute.job(timeout=3600, upload=True)``; returns the Job."""

        def decorator(function: Callable[..., Any]) -> Job:
            job = Job(self, function, ports=ports, timeout=timeout, upload=upload, ssh=ssh)
            if self._cords:
                raise ChuteError(
                    f"cannot add job {job.name!r}: chute {self._name!r} has cords, and a chute has cords or jobs, "
                    "not both",
                    hint="put the jobs in a chute of their own",
                )
            if any(j.name == job.name for j in self._jobs):
                raise ChuteError(f"chute {self._name!r} already has a job named {job.name!r}")
            self._jobs.append(job)
            return job

        return decorator

    # Description for the platform.
    def image_spec(self) -> ImageSpec:
        """The image reference, and for a built image its Dockerfile."""
        if isinstance(self._image, str):
            return ImageSpec(ref=self._image, dockerfile=None)
        return ImageSpec(ref=self._image.ref, dockerfile=str(self._image))

    def manifest(self) -> Manifest:
        """The manifest the scheduler receives (``chutes inspect --json`` prints it)."""
        try:
            return Manifest(
                chute_id=self.uid,
                username=self._username,
                name=self._name,
                tagline=self._tagline,
                readme=self._readme,
                revision=self.revision,
                standard_template=self._standard_template,
                image=self.image_spec(),
                node_selector=self._node_selector,
                concurrency=self.concurrency,
                max_instances=self.max_instances,
                scaling_threshold=self.scaling_threshold,
                shutdown_after_seconds=self.shutdown_after_seconds,
                allow_external_egress=self.allow_external_egress,
                cords=[c.spec() for c in self._cords],
                jobs=[j.spec() for j in self._jobs],
                sdk_version=chutes.__version__,
            )
        except ValidationError as exc:
            raise ManifestError(
                f"chute {self._name!r} has no valid manifest: {_first_error(exc)}",
                hint="declare at least one @chute.cord or @chute.job" if not (self._cords or self._jobs) else None,
            ) from exc

    def __repr__(self) -> str:
        return f"<Chute {self._username}/{self._name} cords={len(self._cords)} jobs={len(self._jobs)}>"


class ChutePack(BaseModel):
    """A chute plus extra callables (what the templates return); ``pack.chute`` is the Chute."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="allow")

    chute: Chute
