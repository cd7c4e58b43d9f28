"""HTTP plumbing shared by the Nomad and Consul servers: errors, blocking-query parameters (ACLs: ``acl``)."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from chutes.devcluster.durations import DurationError, parse_duration
from chutes.devcluster.state.index import DEFAULT_WAIT_S, MAX_WAIT_S

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class APIError(Exception):
    """An error answered to the client as ``{"detail": ..., "hint": ...}`` with an HTTP status."""

    def __init__(self, status: int, detail: str, hint: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.hint = hint


def bad_request(detail: str, hint: str | None = None) -> APIError:
    return APIError(400, detail, hint)


def not_found(detail: str, hint: str | None = None) -> APIError:
    return APIError(404, detail, hint)


def error_body(status: int, detail: str, hint: str | None) -> web.Response:
    return web.json_response({"detail": detail, "hint": hint}, status=status)


def json_response(data: Any, index: int | None = None, index_header: str = "X-Nomad-Index") -> web.Response:
    headers = {}
    if index is not None:
        headers[index_header] = str(max(1, index))
    return web.Response(text=json.dumps(data), content_type="application/json", headers=headers)


def validation_detail(exc: ValidationError, root: str) -> str:
    """One line per problem, each naming the field path as the client spelled it (``Job.TaskGroups.0.Drvier``)."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in (root, *err["loc"]) if p != "")
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown field")
        else:
            lines.append(f"{path}: {err['msg']}")
    return "; ".join(lines)


def error_middleware(service: str) -> Any:
    """Turn APIError, bad JSON and unexpected exceptions into JSON errors (never a bare traceback)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except APIError as exc:
            return error_body(exc.status, exc.detail, exc.hint)
        except web.HTTPException as exc:
            if exc.status in (404, 405):
                return error_body(
                    exc.status,
                    f"{request.method} {request.path} is not supported by the devcluster's {service} API",
                    "see docs/devcluster.md for the endpoints it serves",
                )
            raise
        except json.JSONDecodeError as exc:
            return error_body(400, f"request body is not valid JSON: {exc}", None)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error_body(500, f"internal error in the devcluster while serving {request.path}", "see its log")

    return middleware


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    return json.loads(raw)


def query_bool(request: web.Request, name: str) -> bool:
    """Consul and Nomad treat a present flag without value (``?recurse``) as true."""
    if name not in request.query:
        return False
    value = request.query.get(name, "").strip().lower()
    return value not in ("false", "0", "no")


def query_int(request: web.Request, name: str, default: int = 0) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"query parameter {name}={raw!r} is not an integer") from None


class Blocking:
    """The ``index``/``wait`` parameters of a blocking query."""

    def __init__(self, index: int, wait_s: float) -> None:
        self.index = index
        self.wait_s = wait_s

    @property
    def active(self) -> bool:
        return self.index > 0

    @classmethod
    def from_request(cls, request: web.Request) -> Blocking:
        index = query_int(request, "index", 0)
        raw_wait = request.query.get("wait")
        wait_s = DEFAULT_WAIT_S
        if raw_wait:
            try:
                wait_s = parse_duration(raw_wait)
            except DurationError as exc:
                raise bad_request(str(exc)) from None
        wait_s = min(max(wait_s, 0.0), MAX_WAIT_S)
        # Both servers add up to wait/16 of jitter so that many watchers do not return in lockstep.
        wait_s += random.uniform(0, wait_s / 16)
        return cls(index, wait_s)
