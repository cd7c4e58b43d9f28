"""Consul's KV and session endpoints."""

from __future__ import annotations

from aiohttp import web

from chutes.devcluster.consul.api_agent import CONSUL, blocking_index, reply
from chutes.devcluster.consul.bodies import norm
from chutes.devcluster.consul.kv import KVError, entry_json
from chutes.devcluster.consul.sessions import SessionError
from chutes.devcluster.consul.state import ConsulState
from chutes.devcluster.durations import DurationError, parse_duration
from chutes.devcluster.http_util import APIError, Blocking, bad_request, json_response, query_bool, read_json

routes = web.RouteTableDef()


def _state(request: web.Request) -> ConsulState:
    return request.app[CONSUL]


def _optional_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"Invalid {name} value: {raw!r}") from None
    if value < 0:
        raise bad_request(f"Invalid {name} value: {raw!r}")
    return value


# -- KV ----------------------------------------------------------------------------------------------------


@routes.get("/v1/kv/{key:.*}")
async def kv_get(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    key = request.match_info["key"]
    recurse = query_bool(request, "recurse")
    keys = "keys" in request.query
    blocking = Blocking.from_request(request)

    def current() -> int:
        return state.kv.table_index() if recurse or keys else state.kv.key_index(key)

    if blocking.active:
        await state.index.wait_past(current, blocking.index, blocking.wait_s)
    index = max(1, current())
    if keys:
        found = state.kv.keys(key, request.query.get("separator") or None)
        if not found:
            return _reply_404(index)
        return reply(found, index)
    if recurse:
        entries = state.kv.prefix(key)
        if not entries:
            return _reply_404(index)
        return reply([entry_json(e) for e in entries], index)
    entry = state.kv.get(key)
    if entry is None:
        return _reply_404(index)
    if query_bool(request, "raw"):
        resp = web.Response(body=entry.value, content_type="application/octet-stream")
        resp.headers["X-Consul-Index"] = str(index)
        return resp
    return reply([entry_json(entry)], index)


def _reply_404(index: int) -> web.Response:
    resp = web.Response(status=404)
    resp.headers["X-Consul-Index"] = str(max(1, index))
    resp.headers["X-Consul-KnownLeader"] = "true"
    return resp


@routes.put("/v1/kv/{key:.*}")
async def kv_put(request: web.Request) -> web.Response:
    state = _state(request)
    key = request.match_info["key"]
    if "acquire" in request.query and "release" in request.query:
        raise bad_request("Conflicting flags: acquire and release")
    value = await request.read()
    try:
        ok = state.kv.put(
            key,
            value,
            flags=_optional_int(request, "flags"),
            cas=_optional_int(request, "cas"),
            acquire=request.query.get("acquire"),
            release=request.query.get("release"),
        )
    except KVError as exc:
        raise APIError(exc.status, str(exc)) from None
    return json_response(ok)


@routes.delete("/v1/kv/{key:.*}")
async def kv_delete(request: web.Request) -> web.Response:
    state = _state(request)
    cas = _optional_int(request, "cas")
    recurse = query_bool(request, "recurse")
    if cas is not None and recurse:
        raise bad_request("Conflicting flags: cas and recurse")
    return json_response(state.kv.delete(request.match_info["key"], recurse=recurse, cas=cas))


# -- sessions ----------------------------------------------------------------------------------------------


def _duration(value: object, field: str, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    if isinstance(value, int | float):
        return float(value) / 1e9
    try:
        return parse_duration(str(value))
    except DurationError as exc:
        raise bad_request(f"{field}: {exc}") from None


@routes.put("/v1/session/create")
async def session_create(request: web.Request) -> web.Response:
    state = _state(request)
    body = norm(await read_json(request) or {}, "session")
    checks = body.get("checks")
    node_checks = body.get("nodechecks", checks)
    service_checks = body.get("servicechecks") or []
    if node_checks is not None and not isinstance(node_checks, list):
        raise bad_request("NodeChecks must be a list of check IDs")
    if not isinstance(service_checks, list):
        raise bad_request("ServiceChecks must be a list of {ID, Namespace}")
    try:
        session = state.sessions.create(
            name=str(body.get("name") or ""),
            node=str(body.get("node") or state.catalog.local_node),
            behavior=str(body.get("behavior") or "release"),
            ttl_s=_duration(body.get("ttl"), "TTL", None),
            lock_delay_s=_duration(body.get("lockdelay"), "LockDelay", 15.0) or 0.0,
            node_checks=[str(c) for c in node_checks] if node_checks is not None else None,
            service_checks=[{"ID": str(norm(c, "ServiceChecks").get("id", ""))} for c in service_checks],
        )
    except SessionError as exc:
        raise bad_request(str(exc)) from None
    return json_response({"ID": session.id})


@routes.put("/v1/session/destroy/{session_id}")
async def session_destroy(request: web.Request) -> web.Response:
    return json_response(_state(request).sessions.destroy(request.match_info["session_id"]))


@routes.put("/v1/session/renew/{session_id}")
async def session_renew(request: web.Request) -> web.Response:
    state = _state(request)
    session_id = request.match_info["session_id"]
    session = state.sessions.renew(session_id)
    if session is None:
        raise APIError(404, f"Session id '{session_id}' not found")
    return json_response([state.sessions.to_json(session)])


@routes.get("/v1/session/info/{session_id}")
async def session_info(request: web.Request) -> web.Response:
    state = _state(request)
    index = await blocking_index(request, "sessions")
    session = state.sessions.sessions.get(request.match_info["session_id"])
    return reply([state.sessions.to_json(session)] if session else [], index)


@routes.get("/v1/session/list")
async def session_list(request: web.Request) -> web.Response:
    state = _state(request)
    index = await blocking_index(request, "sessions")
    items = [state.sessions.to_json(s) for s in state.sessions.sessions.values()]
    return reply(items, index)


@routes.get("/v1/session/node/{node}")
async def session_node(request: web.Request) -> web.Response:
    state = _state(request)
    index = await blocking_index(request, "sessions")
    node = request.match_info["node"]
    items = [state.sessions.to_json(s) for s in state.sessions.sessions.values() if s.node == node]
    return reply(items, index)
