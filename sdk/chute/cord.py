"""Cord: one HTTP endpoint of a chute, made by ``@chute.cord(...)``.

A cord either calls the user's function (sync, async, generator or async generator; generators stream) or,
with ``passthrough=True``, forwards the JSON body to a server the chute started on 127.0.0.1 (an inference
engine) at ``passthrough_port`` / ``passthrough_path`` with the HTTP verb ``method``. The runtime serves it at
``public_api_path`` with ``public_api_method`` (docs/internal-contracts.md, "Chute objects seen by the runtime").

A cord's function may use FastAPI's request parameters (``Depends``, ``Header``, ``Request``, ...: see
``chutes.chute.dependencies``) and declare ``response_model`` / ``status_code`` as a FastAPI route does.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from chutes import schema
from chutes.chute.dependencies import request_dependant
from chutes.chute.errors import ChuteError, InvalidPath
from chutes.manifest import CORD_PATH_RE, CordSpec

if TYPE_CHECKING:
    from chutes.chute.base import Chute

PUBLIC_METHODS = ("GET", "POST")
UPSTREAM_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_PASSTHROUGH_PORT = 8000
_CONTENT_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(;[ -~]*)?$")


def normalize_path(value: str, what: str, *, hint: str | None = None) -> str:
    """``value`` with one leading '/' and no trailing one, or InvalidPath naming the rule."""
    if not isinstance(value, str):
        raise InvalidPath(f"{what} must be a string, got {type(value).__name__}")
    path = "/" + value.strip("/")
    if "//" in path or not CORD_PATH_RE.fullmatch(path):
        raise InvalidPath(
            f"invalid {what} {value!r}: use '/'-separated parts of lower-case letters, digits, '_' and '-', "
            "each part starting with a letter, digit or '_'",
            hint=hint,
        )
    if path.startswith("/_"):
        raise InvalidPath(
            f"invalid {what} {value!r}: paths starting with '/_' are reserved for the runtime (/_alive, /_ready, ...)",
            hint=hint or "choose a path that does not start with '_'",
        )
    return path


def _method(value: str, allowed: tuple[str, ...], what: str, where: str) -> str:
    method = value.upper() if isinstance(value, str) else value
    if method not in allowed:
        raise ChuteError(f"invalid {what} {value!r} of {where}: use one of {', '.join(allowed)}")
    return str(method)


def _first_body_param(func: Callable[..., Any]) -> str | None:
    """The first parameter after ``self`` that the request does not fill: where ``input_schema``'s model goes."""
    try:
        request = {p.name for p in schema.request_params(func)}
    except schema.SchemaError:
        request = set()
    params = list(inspect.signature(inspect.unwrap(func)).parameters.values())[1:]
    return next((p.name for p in params if p.name not in request and p.kind is not p.VAR_KEYWORD), None)


class Cord:
    """One endpoint of a chute. Calling it runs the function locally with the chute as ``self``."""

    def __init__(
        self,
        chute: Chute,
        func: Callable[..., Any],
        *,
        stream: bool | None = None,
        path: str | None = None,
        passthrough_path: str | None = None,
        passthrough: bool = False,
        passthrough_port: int | None = None,
        public_api_path: str | None = None,
        public_api_method: str = "POST",
        method: str = "POST",
        provision_timeout: int = 180,
        input_schema: Any = None,
        minimal_input_schema: Any = None,
        output_content_type: str | None = None,
        output_schema: Any = None,
        response_model: Any = None,
        status_code: int | None = None,
        **session_kwargs: Any,
    ) -> None:
        if not callable(func):
            raise ChuteError(f"@chute.cord decorates a function, got {type(func).__name__}")
        self._chute = chute
        self.func = func
        self.name: str = func.__name__
        where = f"cord {self.name!r}"
        self.path = normalize_path(
            path if path is not None else self.name,
            f"path of {where}",
            hint=None if path is not None else "pass path='/some_name' to @chute.cord, or rename the function",
        )
        # As written (normalizing drops a trailing '/'): Chute tells '/x' and '/x/' apart when both are declared.
        self.declared_public_api_path = public_api_path
        self.public_api_path = (
            normalize_path(public_api_path, f"public_api_path of {where}") if public_api_path is not None else self.path
        )
        self.public_api_method = _method(public_api_method, PUBLIC_METHODS, "public_api_method", where)
        self.method = _method(method, UPSTREAM_METHODS, "method", where)
        if not isinstance(provision_timeout, int) or isinstance(provision_timeout, bool) or provision_timeout < 1:
            raise ChuteError(f"provision_timeout of {where} must be a positive number of seconds")
        self.provision_timeout = provision_timeout
        self.session_kwargs: dict[str, Any] = dict(session_kwargs)

        self.passthrough = bool(passthrough)
        if self.passthrough:
            port = DEFAULT_PASSTHROUGH_PORT if passthrough_port is None else passthrough_port
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                raise ChuteError(f"passthrough_port of {where} must be a port number (1-65535), got {port!r}")
            self.passthrough_port: int | None = port
            self.passthrough_path: str | None = (
                normalize_path(passthrough_path, f"passthrough_path of {where}")
                if passthrough_path is not None
                else self.path
            )
        else:
            if passthrough_port is not None or passthrough_path is not None:
                raise ChuteError(
                    f"{where} sets passthrough_port/passthrough_path without passthrough=True",
                    hint="add passthrough=True to forward requests to a local server, or drop those arguments",
                )
            self.passthrough_port = None
            self.passthrough_path = None

        self.stream = self._stream_flag(stream, where)
        self.model_param: str | None = None
        self.input_model, self.takes_model, self.input_schema = self._input(input_schema, where)
        # FastAPI's view of the parameters the request fills (None: a plain cord, served on the fast path).
        self.dependant = None if self.passthrough else request_dependant(func, self.public_api_path, where)
        self.response_model = self._response_model(response_model, where)
        if status_code is not None and (
            not isinstance(status_code, int) or isinstance(status_code, bool) or not 200 <= status_code <= 299
        ):
            raise ChuteError(
                f"status_code of {where} must be a success status (200-299), got {status_code!r}",
                hint="raise HTTPException(status_code=...) for error answers",
            )
        self.status_code: int | None = status_code
        self.minimal_input_schema = self._schema(minimal_input_schema, where) if minimal_input_schema else None
        if output_schema is not None:
            self.output_schema: dict[str, Any] | None = self._schema(output_schema, where)
        else:
            self.output_schema = schema.output_schema(func, stream=self.stream)
        if output_content_type is not None:
            if not isinstance(output_content_type, str) or not _CONTENT_TYPE_RE.fullmatch(output_content_type):
                raise ChuteError(f"invalid output_content_type {output_content_type!r} of {where}")
            self.output_content_type: str | None = output_content_type
        else:
            self.output_content_type = schema.infer_content_type(self.output_schema, stream=self.stream)

    def _stream_flag(self, stream: bool | None, where: str) -> bool:
        if self.passthrough:
            # The function of a passthrough cord is never called: the engine's answer is relayed as it comes.
            return bool(stream)
        generator = schema.is_streaming(self.func)
        if stream is None:
            return generator
        if stream and not generator:
            raise ChuteError(
                f"{where} has stream=True but its function is not a generator",
                hint="yield each chunk (`yield {...}`) instead of returning the result",
            )
        if not stream and generator:
            raise ChuteError(f"{where} has stream=False but its function is a generator", hint="drop stream=False")
        return bool(stream)

    def _response_model(self, value: Any, where: str) -> Any:
        if value is None:
            return None
        if self.stream or self.passthrough:
            raise ChuteError(
                f"{where}: response_model applies to cords that return one value, not streams or passthrough"
            )
        try:
            from fastapi.utils import create_model_field

            create_model_field(name="response", type_=value, mode="serialization")
        except Exception as exc:
            raise ChuteError(f"response_model of {where} is not a type FastAPI can serialize: {exc}") from exc
        return value

    def _schema(self, value: Any, where: str) -> dict[str, Any]:
        try:
            return schema.schema_of(value)
        except schema.SchemaError as exc:
            raise ChuteError(f"{where}: {exc}", hint=exc.hint) from exc

    def _input(self, input_schema: Any, where: str) -> tuple[type[BaseModel] | None, bool, dict[str, Any] | None]:
        if input_schema is not None:
            if self.passthrough and isinstance(input_schema, dict):
                return None, False, input_schema
            if not schema.is_model_class(input_schema):
                raise ChuteError(
                    f"input_schema of {where} must be a pydantic model class, got {input_schema!r}",
                    hint="define `class MyInput(BaseModel): ...` and pass input_schema=MyInput",
                )
            if not self.passthrough:
                try:
                    inspect.signature(self.func).bind(None, None)
                except TypeError as exc:
                    raise ChuteError(
                        f"{where} has input_schema={input_schema.__name__}, so its function is called with one "
                        f"argument after self, which its signature does not accept: {exc}",
                        hint=f"write it as `def {self.name}(self, data: {input_schema.__name__})`",
                    ) from exc
                self.model_param = _first_body_param(self.func)
            return input_schema, True, self._schema(input_schema, where)
        if self.passthrough:
            return None, False, None
        try:
            spec = schema.derive_input(self.func)
            self.model_param = spec.model_param
            return spec.model, spec.takes_model, spec.json_schema()
        except schema.SchemaError as exc:
            raise ChuteError(f"{where}: {exc}", hint=exc.hint) from exc

    @property
    def chute(self) -> Chute:
        """The chute this cord belongs to."""
        return self._chute

    def spec(self) -> CordSpec:
        """The cord's entry in the manifest."""
        return CordSpec(
            name=self.name,
            path=self.path,
            public_api_path=self.public_api_path,
            public_api_method=self.public_api_method,
            method=self.method,
            stream=self.stream,
            passthrough=self.passthrough,
            passthrough_port=self.passthrough_port,
            passthrough_path=self.passthrough_path,
            input_schema=self.input_schema,
            output_schema=self.output_schema,
            output_content_type=self.output_content_type,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here, with the chute as ``self`` (no HTTP involved)."""
        return self.func(self._chute, *args, **kwargs)

    def __repr__(self) -> str:
        kind = "passthrough " if self.passthrough else ""
        stream = " stream" if self.stream else ""
        return f"<Cord {self.name} {kind}{self.public_api_method} {self.public_api_path}{stream}>"
