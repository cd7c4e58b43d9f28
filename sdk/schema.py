"""Type hints → input models and JSON schemas for cords and jobs.

A cord's JSON body is validated by a pydantic model before the user's function runs. That model is either
the ``input_schema`` class the user passed, the class of the function's only parameter when it is a pydantic
model, or a model derived here from the function's parameters after ``self``: each parameter becomes a field
with its type hint (``Any`` without one) and its default (required without one). ``**kwargs`` lets unknown
fields through. Parameters that FastAPI fills from the request (``Depends``, ``Security``, ``Header``, ``Query``,
``Cookie``, or a ``Request``, ``Response``, ``BackgroundTasks`` annotation) are no input fields: the runtime
solves them with FastAPI's dependency machinery (``chutes.chute.dependencies``).
"""

from __future__ import annotations

import builtins
import collections.abc
import contextlib
import inspect
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import params as fastapi_params
from fastapi.security import SecurityScopes
from pydantic import BaseModel, ConfigDict, PydanticUserError, TypeAdapter, create_model
from starlette.background import BackgroundTasks
from starlette.requests import HTTPConnection
from starlette.responses import Response

_STREAM_ORIGINS = (
    collections.abc.AsyncGenerator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.Generator,
    collections.abc.Iterator,
    collections.abc.Iterable,
)


class SchemaError(ValueError):
    """A function whose parameters cannot be read from a JSON body."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class InputSpec:
    """How a JSON body reaches a function: validated by ``model``, passed whole or as keyword arguments."""

    model: type[BaseModel] | None
    takes_model: bool
    #: the parameter that receives the whole model when ``takes_model`` (derived from a lone model parameter)
    model_param: str | None = None

    def json_schema(self) -> dict[str, Any] | None:
        return model_json_schema(self.model) if self.model is not None else None


# Annotations FastAPI fills with request objects rather than with values read from the request.
_REQUEST_OBJECTS = (HTTPConnection, Response, BackgroundTasks, SecurityScopes)


def _fastapi_markers(default: Any, annotation: Any) -> list[Any]:
    markers = [default] if isinstance(default, fastapi_params.Depends | fastapi_params.Param) else []
    if typing.get_origin(annotation) is typing.Annotated:
        markers += [
            m for m in typing.get_args(annotation)[1:] if isinstance(m, fastapi_params.Depends | fastapi_params.Param)
        ]
    return markers


def is_request_param(default: Any, annotation: Any) -> bool:
    """True for a parameter FastAPI fills from the request instead of the JSON body.

    ``Depends(...)``/``Security(...)``, ``Header()``, ``Query()``, ``Cookie()``, ``Path()`` (as a default or in
    ``Annotated[...]``), and parameters annotated ``Request``, ``Response``, ``BackgroundTasks``,
    ``HTTPConnection`` or ``SecurityScopes``.
    """
    if _fastapi_markers(default, annotation):
        return True
    base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation
    return isinstance(base, type) and issubclass(base, _REQUEST_OBJECTS)


def check_request_param(name: str, default: Any, annotation: Any, owner: str) -> None:
    """SchemaError for request parameters a cord cannot have: ``Path()`` (cord paths have no placeholders)."""
    if any(isinstance(m, fastapi_params.Path) for m in _fastapi_markers(default, annotation)):
        raise SchemaError(
            f"parameter {name!r} of {owner} is a Path() parameter, but a cord's path has no {{placeholders}}",
            hint="read it from the JSON body (a plain parameter), or use Query() or Header()",
        )


def is_model_class(value: object) -> bool:
    """True for a pydantic model class (not an instance)."""
    return isinstance(value, type) and issubclass(value, BaseModel)


def is_streaming(func: Callable[..., Any]) -> bool:
    """True for generator and async generator functions: their results are streamed."""
    target = inspect.unwrap(func)
    return inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target)


def resolve_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """The function's type hints with string annotations evaluated (``from __future__ import annotations``)."""
    target = inspect.unwrap(func)
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: S110 - fall through to the per-annotation resolution below, which names the culprit
        pass
    namespace: dict[str, Any] = {"__builtins__": builtins}
    namespace.update(getattr(target, "__globals__", {}))
    with contextlib.suppress(TypeError, ValueError):
        namespace.update(inspect.getclosurevars(target).nonlocals)
    hints: dict[str, Any] = {}
    for name, annotation in getattr(target, "__annotations__", {}).items():
        # A quoted hint under `from __future__ import annotations` is a string inside a string: evaluate twice.
        for _ in range(2):
            if not isinstance(annotation, str):
                break
            try:
                # The annotation is code from the user's own module, which is being imported anyway.
                annotation = eval(annotation, namespace)  # noqa: S307
            except Exception as exc:
                where = "the return annotation" if name == "return" else f"parameter {name!r}"
                raise SchemaError(
                    f"cannot resolve the type hint {annotation!r} of {where} of {target.__qualname__}: {exc}",
                    hint="define the type at module level, or import it where the function is defined",
                ) from exc
        hints[name] = annotation
    return hints


def _parameters(func: Callable[..., Any], *, skip_self: bool) -> list[inspect.Parameter]:
    params = list(inspect.signature(inspect.unwrap(func)).parameters.values())
    if not skip_self:
        return params
    if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise SchemaError(
            f"{func.__qualname__} must take the chute as its first parameter",
            hint=f"write it as `def {func.__name__}(self, ...)`",
        )
    return params[1:]


def request_params(func: Callable[..., Any], *, skip_self: bool = True) -> list[inspect.Parameter]:
    """The parameters of ``func`` that FastAPI fills from the request, with their type hints resolved."""
    hints = resolve_hints(func)
    found = []
    for param in _parameters(func, skip_self=skip_self):
        annotation = hints.get(param.name, param.annotation)
        if param.kind is not inspect.Parameter.VAR_KEYWORD and is_request_param(param.default, annotation):
            found.append(param.replace(annotation=annotation))
    return found


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Cord"


def derive_input(func: Callable[..., Any], *, skip_self: bool = True) -> InputSpec:
    """The input model of ``func`` from its parameters (see the module docstring)."""
    params = _parameters(func, skip_self=skip_self)
    hints = resolve_hints(func)
    fields: dict[str, Any] = {}
    extra_allowed = False
    for param in params:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra_allowed = True
            continue
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            raise SchemaError(
                f"parameter {param.name!r} of {func.__qualname__} cannot be filled from a JSON object",
                hint="use named parameters (no *args and no positional-only parameters)",
            )
        annotation = hints.get(param.name, Any)
        if is_request_param(param.default, annotation):
            check_request_param(param.name, param.default, annotation, func.__qualname__)
            continue
        if isinstance(param.default, fastapi_params.Form | fastapi_params.File):
            raise SchemaError(
                f"parameter {param.name!r} of {func.__qualname__} is a form field, but a cord's input is a JSON body",
                hint="make it a plain parameter (a JSON field), or read the raw body from a `request: Request`",
            )
        if param.name.startswith("_"):
            raise SchemaError(
                f"parameter {param.name!r} of {func.__qualname__} starts with '_', which a JSON field cannot",
                hint="rename the parameter",
            )
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    if not fields and not extra_allowed:
        return InputSpec(model=None, takes_model=False)
    if len(fields) == 1 and not extra_allowed:
        ((name, (annotation, default)),) = fields.items()
        if is_model_class(annotation) and default is ...:
            return InputSpec(model=annotation, takes_model=True, model_param=name)
    config = ConfigDict(extra="allow" if extra_allowed else "forbid", protected_namespaces=())
    model_name = f"{_camel(func.__name__)}Input"
    try:
        with warnings.catch_warnings():
            # A parameter may be called e.g. `json` or `schema`: shadowing BaseModel's method is harmless here.
            warnings.simplefilter("ignore", UserWarning)
            model = create_model(model_name, __config__=config, **fields)
    except (PydanticUserError, TypeError) as exc:
        culprit = _unsupported_field(fields)
        where = f"parameter {culprit!r}" if culprit else "a parameter"
        raise SchemaError(
            f"{where} of {func.__qualname__} has a type that cannot be read from JSON: {exc}",
            hint="use JSON types (str, int, float, bool, list, dict), pydantic models, or pass input_schema=",
        ) from exc
    model_json_schema(model, owner=func.__qualname__)
    return InputSpec(model=model, takes_model=False)


def _unsupported_field(fields: dict[str, Any]) -> str | None:
    for name, (annotation, _default) in fields.items():
        try:
            TypeAdapter(annotation)
        except Exception:
            return name
    return None


def model_json_schema(model: type[BaseModel], *, owner: str | None = None) -> dict[str, Any]:
    """The JSON schema of a model; SchemaError when a field (or a default) has no JSON form."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model.model_json_schema()
    except Exception as exc:
        raise SchemaError(
            f"the input of {owner or model.__name__} has no JSON schema: {exc}",
            hint="use JSON types and JSON-serialisable defaults",
        ) from exc


def _stream_item(annotation: Any) -> Any:
    if typing.get_origin(annotation) in _STREAM_ORIGINS:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    if annotation in _STREAM_ORIGINS:
        return Any
    return annotation


def output_schema(func: Callable[..., Any], *, stream: bool) -> dict[str, Any] | None:
    """JSON schema of the return annotation (of each streamed item for a stream), or None when unknown."""
    try:
        annotation = resolve_hints(func).get("return", inspect.Signature.empty)
    except SchemaError:
        return None
    if stream:
        annotation = _stream_item(annotation)
    if annotation in (inspect.Signature.empty, Any, None, type(None)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return TypeAdapter(annotation).json_schema(mode="serialization")
    except Exception:
        # An output annotation such as fastapi.Response documents the code but has no JSON schema.
        return None


def schema_of(value: Any) -> dict[str, Any]:
    """A JSON schema given as a pydantic class or as a dict."""
    if is_model_class(value):
        return model_json_schema(value)
    if isinstance(value, dict):
        return value
    raise SchemaError(
        f"expected a pydantic model class or a JSON schema dict, got {type(value).__name__}",
        hint="pass a pydantic BaseModel subclass",
    )


def infer_content_type(schema: dict[str, Any] | None, *, stream: bool) -> str | None:
    """The content type of a cord's result, as Chutes infers it (plus SSE for streams).

    Streams are served as server-sent events. Otherwise: JSON for object and array results, octet-stream for
    bytes, text/plain for other annotated results, and None (decided from the value) when unannotated.
    """
    if stream:
        return "text/event-stream"
    if schema is None:
        return None
    kind = schema.get("type")
    if kind in ("object", "array") or "$ref" in schema or "properties" in schema:
        return "application/json"
    if kind == "string" and schema.get("format") == "binary":
        return "application/octet-stream"
    return "text/plain"
