"""Nomad's Variables API as the devcluster serves it: ``/v1/var/:path`` (GET, PUT/POST, DELETE) and ``/v1/vars``.

Answers have Nomad's shapes: a variable with ``Items`` on read and write, metadata only in lists, ``204`` with no
body on delete, ``409`` with the current variable on a lost check-and-set (python-nomad raises
``VariableConflict``). Reads block on ``?index=&wait=`` like Nomad's, which is how templates watch a variable.
With ACLs, the middleware checks a path's ``read``/``write``/``destroy``; a list leaves out the variables whose
path the token may not ``list``, and a conflict answer carries ``Items`` only for a token that may read them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from chutes.devcluster.acl.http import variable_allowed
from chutes.devcluster.http_util import APIError, Blocking, bad_request, json_response, not_found, read_json
from chutes.devcluster.nomad.cluster import NomadCluster
from chutes.devcluster.nomad.variables import DEFAULT_NAMESPACE, CASConflict, VariableError, topic

routes = web.RouteTableDef()
BODY_FIELDS = {"Namespace", "Path", "Items", "CreateIndex", "CreateTime", "ModifyIndex", "ModifyTime"}
LOCK_PARAMS = ("lock-acquire", "lock-release", "lock-renew")


def _cluster(request: web.Request) -> NomadCluster:
    from chutes.devcluster.nomad.api import NOMAD

    return request.app[NOMAD]


def _namespace(request: web.Request) -> str:
    return request.query.get("namespace") or DEFAULT_NAMESPACE


def _path(request: web.Request) -> str:
    path = request.match_info.get("path", "")
    if not path:
        raise bad_request("missing variable path")
    return path


def _cas(request: web.Request) -> int | None:
    if any(p in request.query for p in LOCK_PARAMS):
        if "cas" in request.query:
            raise bad_request("CAS can't be used with lock operations")
        raise APIError(400, "variable locks are not implemented by the devcluster", "see docs/devcluster.md")
    raw = request.query.get("cas")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise bad_request(f'can not parse cas: strconv.ParseUint: parsing "{raw}": invalid syntax')
    return value


def _reply(data: Any, index: int, status: int = 200) -> web.Response:
    resp = json_response(data, index, "X-Nomad-Index")
    resp.set_status(status)
    resp.headers["X-Nomad-KnownLeader"] = "true"
    resp.headers["X-Nomad-LastContact"] = "0"
    return resp


def _conflict(request: web.Request, exc: CASConflict) -> web.Response:
    """409 with the current variable (a zero-valued one when missing; its items only for a token that may read
    them); X-Nomad-Index is its ModifyIndex."""
    current = exc.current
    readable = variable_allowed(request, current.namespace, current.path, "read")
    body = current.to_json() if current.modify_index and readable else current.metadata()
    resp = _reply(body, current.modify_index, status=409)
    resp.headers["X-Nomad-Index"] = str(current.modify_index)
    return resp


@routes.get("/v1/vars")
async def list_variables(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    blocking = Blocking.from_request(request)
    if blocking.active:
        await cluster.state.index.wait_topics(("vars",), blocking.index, blocking.wait_s)
    found = cluster.variables.matching(_namespace(request), request.query.get("prefix", ""))
    listed = [v.metadata() for v in found if variable_allowed(request, v.namespace, v.path, "list")]
    return _reply(listed, cluster.state.index.of("vars"))


@routes.get("/v1/var/{path:.*}")
async def read_variable(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    namespace, path = _namespace(request), _path(request)
    blocking = Blocking.from_request(request)
    if blocking.active:
        await cluster.state.index.wait_topics((topic(namespace, path),), blocking.index, blocking.wait_s)
    var = cluster.variables.get(namespace, path)
    index = cluster.state.index.of(topic(namespace, path))
    if var is None:
        raise not_found("variable not found")
    return _reply(var.to_json(), index)


@routes.put("/v1/var/{path:.*}")
@routes.post("/v1/var/{path:.*}")
async def write_variable(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    path = _path(request)
    cas = _cas(request)
    body = await read_json(request)
    if body is None:
        raise bad_request("Request body is empty")
    if not isinstance(body, dict):
        raise bad_request("the variable must be a JSON object")
    unknown = sorted(set(body) - BODY_FIELDS)
    if unknown:
        raise bad_request(f"unknown field(s) {', '.join(unknown)}", "a variable has Namespace, Path and Items")
    items = body.get("Items")
    if items is not None and (
        not isinstance(items, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in items.items())
    ):
        raise bad_request("Items must be an object of string values", "Nomad variable items are strings")
    namespace = body.get("Namespace") or _namespace(request)
    if not variable_allowed(request, str(namespace), path, "write"):
        # The middleware checked the request's namespace; the body may name another one (Nomad checks that one).
        raise APIError(403, "Permission denied", f"the token lacks variable write on {path!r} in {namespace!r}")
    try:
        var = cluster.variables.put(str(namespace), path, dict(items or {}), cas)
    except CASConflict as exc:
        return _conflict(request, exc)
    except VariableError as exc:
        raise bad_request(str(exc)) from None
    return _reply(var.to_json(), var.modify_index)


@routes.delete("/v1/var/{path:.*}")
async def delete_variable(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    path = _path(request)
    cas = _cas(request)
    try:
        index = cluster.variables.delete(_namespace(request), path, cas)
    except CASConflict as exc:
        return _conflict(request, exc)
    except VariableError as exc:
        raise bad_request(str(exc)) from None
    return web.Response(status=204, headers={"X-Nomad-Index": str(max(1, index))})
