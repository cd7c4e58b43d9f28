"""FastAPI's dependency injection for cords, per call (the SDK builds the ``Dependant``: chutes.chute.dependencies).

A cord whose function takes FastAPI request parameters (``Depends``, ``Header``, ``Request``, ``BackgroundTasks``,
...) or declares ``response_model`` / ``status_code`` is served through FastAPI's own machinery: a Starlette
``Request`` over the call's scope and (already read) body, ``solve_dependencies`` with the chute as the
``dependency_overrides`` provider, and the two exit stacks FastAPI's routes keep in the scope. As in FastAPI,
dependencies with ``scope="function"`` are closed when the function returns, the others (the default) after the
answer has been sent, a stream's last byte included. Plain cords never come here: they keep the fast path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import SolvedDependency, solve_dependencies
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.routing import serialize_response
from fastapi.utils import create_model_field
from starlette.requests import Request

from chutes.runtime.asgi import Headers, Message, Receive, Scope
from chutes.runtime.protocols import CordLike

# Where FastAPI's routes keep the request's and the function's exit stacks (solve_dependencies reads them).
REQUEST_STACK = "fastapi_inner_astack"
FUNCTION_STACK = "fastapi_function_astack"


@dataclass(frozen=True, slots=True)
class RequestBinding:
    """How FastAPI takes part in calls of one cord; built once per route at start-up."""

    dependant: Dependant
    #: the parameter that receives the validated input model (cords that take their input as one model)
    model_param: str | None
    response_field: Any
    status_code: int | None
    #: query parameters FastAPI reads (``Query()`` and sub-dependencies' scalars): not input of a GET cord
    query_names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, cord: CordLike) -> RequestBinding | None:
        """The binding of a cord with FastAPI parameters or response settings; None for a plain cord."""
        # Optional attributes (docs/internal-contracts.md): objects without them are plain cords.
        dependant = getattr(cord, "dependant", None)
        response_model = getattr(cord, "response_model", None)
        status_code = getattr(cord, "status_code", None)
        if dependant is None and response_model is None and status_code is None:
            return None
        field = None
        if response_model is not None:
            field = create_model_field(name=f"Response_{cord.name}", type_=response_model, mode="serialization")
        dependant = dependant if dependant is not None else Dependant(path=cord.public_api_path)
        return cls(
            dependant=dependant,
            model_param=getattr(cord, "model_param", None),
            response_field=field,
            status_code=status_code if isinstance(status_code, int) else None,
            query_names=_query_names(dependant),
        )


def _query_names(dependant: Dependant) -> frozenset[str]:
    names: set[str] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        names.update(str(getattr(field, "alias", None) or field.name) for field in current.query_params)
        pending.extend(current.dependencies)
    return frozenset(names)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out the already-read body once, then defers to the connection."""
    sent = False

    async def receive_body() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_body


def request_scope(scope: Scope, app: Any) -> Scope:
    """A copy of the call's scope as FastAPI's routes present it: ``app`` is the chute, no path parameters."""
    child = dict(scope)
    child["app"] = app
    child.setdefault("path_params", {})
    router = getattr(app, "router", None)
    if router is not None:
        child["router"] = router
    return child


async def solve(binding: RequestBinding, request: Request, overrides_provider: Any) -> SolvedDependency:
    """FastAPI's values for the cord's request parameters; RequestValidationError (422) when some are invalid.

    The exit stacks must be in ``request.scope`` (REQUEST_STACK, FUNCTION_STACK). HTTPException raised by a
    dependency propagates as it is.
    """
    provider = overrides_provider if hasattr(overrides_provider, "dependency_overrides") else None
    solved = await solve_dependencies(
        request=request,
        dependant=binding.dependant,
        dependency_overrides_provider=provider,
        async_exit_stack=request.scope[REQUEST_STACK],
        embed_body_fields=False,
    )
    if solved.errors:
        raise RequestValidationError(solved.errors)
    return solved


def validation_detail(exc: RequestValidationError) -> Any:
    """FastAPI's error list without the offending values (a rejected API key must not be echoed back)."""
    errors = [{k: v for k, v in dict(e).items() if k not in ("input", "ctx", "url")} for e in exc.errors()]
    return jsonable_encoder(errors)


async def serialize(binding: RequestBinding, result: Any) -> Any:
    """The result through ``response_model`` as FastAPI serializes it (ResponseValidationError when it does not fit)."""
    return await serialize_response(field=binding.response_field, response_content=result, is_coroutine=True)


def answer_of(binding: RequestBinding, solved: SolvedDependency) -> tuple[int, Headers]:
    """Status and extra headers of a successful answer: what dependencies set on their ``Response``, else the cord's."""
    response = solved.response
    status = response.status_code if response.status_code else (binding.status_code or 200)
    return int(status), list(response.headers.raw)
