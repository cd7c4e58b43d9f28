"""FastAPI inside cords: the parameters a request fills, described by FastAPI's own ``Dependant``.

A cord is a FastAPI endpoint in all but its routing. Its JSON body comes from ``input_schema`` or from its plain
parameters (``chutes.schema``); its other parameters are FastAPI's: ``Depends``/``Security`` (sync, async and
generator dependencies, sub-dependencies, ``chute.dependency_overrides``), ``Header``, ``Query``, ``Cookie``, and
``Request``, ``Response``, ``BackgroundTasks``, ``HTTPConnection``, ``SecurityScopes`` annotations. The runtime
solves them on every call with FastAPI's ``solve_dependencies`` (``chutes.runtime.dependencies``).

The ``Dependant`` is built here, when the cord is declared, so that what FastAPI would refuse (and what a cord
cannot do, such as a dependency that reads the body as a model) is refused on import, naming the cord.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant

from chutes import schema
from chutes.chute.errors import ChuteError


def _body_readers(dependant: Dependant) -> list[str]:
    """Names of the (sub-)dependencies that declare body parameters (FastAPI would read the JSON body for them)."""
    found: list[str] = []
    pending = [dependant]
    while pending:
        current = pending.pop()
        if current.body_params:
            found.append(getattr(current.call, "__qualname__", None) or str(current.call))
        pending.extend(current.dependencies)
    return found


def request_dependant(func: Callable[..., Any], path: str, where: str) -> Dependant | None:
    """FastAPI's Dependant for the request parameters of a cord function; None for a cord without any."""
    try:
        params = schema.request_params(func)
    except schema.SchemaError as exc:
        raise ChuteError(f"{where}: {exc}", hint=exc.hint) from exc
    if not params:
        return None

    def endpoint(**values: Any) -> None:  # pragma: no cover - never called, it only carries the signature
        raise RuntimeError("the runtime calls the cord's own function")

    # Keyword-only: the request parameters may sit between body parameters in any order.
    signature = inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params])
    endpoint.__signature__ = signature  # type: ignore[attr-defined]
    endpoint.__name__ = endpoint.__qualname__ = getattr(func, "__name__", "cord")
    try:
        dependant = get_dependant(path=path, call=endpoint)
    except Exception as exc:  # FastAPI asserts and raises FastAPIError on what it cannot use
        raise ChuteError(
            f"{where}: FastAPI cannot use its request parameters: {type(exc).__name__}: {exc}",
            hint="see FastAPI's documentation of Depends, Header, Query and Cookie",
        ) from exc
    readers = _body_readers(dependant)
    if readers:
        raise ChuteError(
            f"{where}: {', '.join(readers)} reads the request body as a model, but a cord's JSON body is its input",
            hint="take the fields as parameters of the cord, or read `await request.json()` from a `request: Request`",
        )
    return dependant
