"""API errors: every failure answers JSON ``{"detail": ..., "hint": ...}``; bad input is a 4xx, never a 500.

Routers raise ``APIError``; the domain raises ``chutes.scheduler.errors`` (no HTTP in it), mapped to a status
here once (``STATUS``); FastAPI's own validation errors and HTTP exceptions are reshaped to the same body.
Errors of Nomad or Consul (``UpstreamError``) become 502 (it answered badly) or 503 (unreachable) with a hint
that names the address to check.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from chutes.scheduler import errors
from chutes.scheduler.errors import SchedulerError, UpstreamError

log = logging.getLogger(__name__)

_BAD_TEXT = {"22021", "22P05"}  # PostgreSQL: character_not_in_repertoire, untranslatable_character


class ErrorOut(BaseModel):
    """The body of every error answer."""

    detail: str
    hint: str | None = None


class APIError(Exception):
    """An error answer: HTTP ``status``, what went wrong and what to do about it."""

    def __init__(
        self, status: int, detail: str, hint: str | None = None, *, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.hint = hint
        self.extra = extra or {}
        self.headers: dict[str, str] = {}


def not_found(what: str, hint: str | None = None) -> APIError:
    return APIError(404, f"{what} not found", hint)


#: The HTTP status of each kind of domain error (the nearest kind in its class's MRO decides).
STATUS: dict[type[SchedulerError], int] = {
    errors.Invalid: 422,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.TooLarge: 413,
    errors.LimitReached: 429,
    errors.Unavailable: 503,
}


def status_of(exc: SchedulerError) -> int:
    """The HTTP status of a domain error: that of the nearest kind it derives from (500 for none)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(detail: str, hint: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "hint": hint, **extra}


def _validation_detail(errors: list[Any]) -> str:
    parts = []
    for err in errors[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        msg = str(err.get("msg", "invalid"))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape above."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(error_body(exc.detail, exc.hint, **exc.extra), exc.status, headers=exc.headers or None)

    @app.exception_handler(SchedulerError)
    async def _domain(_: Request, exc: SchedulerError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500 and status != 503:
            log.error("unmapped domain error %s: %s", type(exc).__name__, exc)
        return JSONResponse(error_body(str(exc), exc.hint, **exc.extra), status)

    @app.exception_handler(UpstreamError)
    async def _upstream(_: Request, exc: UpstreamError) -> JSONResponse:
        status = 503 if exc.unreachable else 502
        log.warning("%s error answered %d: %s", exc.service, status, exc.detail)
        return JSONResponse(error_body(f"{exc.service}: {exc.detail}", exc.hint), status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        body = error_body(_validation_detail(errors), "fix the request and retry; see /docs", errors=errors)
        return JSONResponse(body, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        hint = {404: "see /docs for the API's routes", 405: "see /docs for the methods this route takes"}
        return JSONResponse(
            error_body(str(exc.detail), hint.get(exc.status_code)), exc.status_code, headers=exc.headers
        )

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        # PostgreSQL refuses NUL characters in text (22021) and in JSON (22P05); SQLite takes them. Any input
        # string can carry one, so it is the caller's mistake (422), not a 500.
        if getattr(exc.orig, "sqlstate", None) in _BAD_TEXT:
            detail = "text with a NUL character (\\u0000) is not accepted"
            return JSONResponse(error_body(detail, "remove NUL characters from the input"), 422)
        log.exception("database error", exc_info=exc)
        return JSONResponse(error_body("internal error", "see the scheduler's log"), 500)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse(error_body("internal error", "see the scheduler's log"), 500)
