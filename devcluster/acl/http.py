"""The ACL endpoints and the middleware that enforces ACLs on every request, for Nomad and for Consul.

Tokens are read as each product reads them: Nomad from ``X-Nomad-Token`` or ``Authorization: Bearer``
(Nomad has no ``?token=``); Consul from ``?token=``, ``X-Consul-Token`` or ``Authorization: Bearer``, in
that order. No token is the anonymous token, which has no policy (``default_policy = "deny"``).

Refusals keep the products' status codes and messages (in the devcluster's JSON error body): Nomad 403
``Permission denied`` (``ACL token not found`` on ``/v1/acl/token/self``); Consul 403 ``ACL not found`` for an
unknown secret and ``Permission denied: token with AccessorID '…' lacks permission 'key:read' on "…"``
(or the anonymous token's wording) otherwise; Consul's list endpoints leave out what the token may not read
and set ``X-Consul-Results-Filtered-By-ACLs``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from chutes.devcluster.acl.needs import ConsulNeed, NomadNeed, consul_need, event_stream_needs, nomad_needs
from chutes.devcluster.acl.policy import ConsulRules, NomadRules
from chutes.devcluster.acl.state import CLIENT, MANAGEMENT, ACLError, ACLState, Identity, Policy, Token
from chutes.devcluster.consul.bodies import norm
from chutes.devcluster.consul.state import ConsulState
from chutes.devcluster.durations import DurationError, parse_duration
from chutes.devcluster.http_util import APIError, Handler, bad_request, error_body, json_response, query_bool

log = logging.getLogger(__name__)

NOMAD_ACL: web.AppKey[ACLState[NomadRules]] = web.AppKey("nomad_acl", ACLState)
CONSUL_ACL: web.AppKey[ACLState[ConsulRules]] = web.AppKey("consul_acl", ACLState)
IDENTITY = "chutes.acl.identity"

GLOBAL_MANAGEMENT_ID = "00000000-0000-0000-0000-000000000001"  # Consul's built-in policy
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
_ANONYMOUS_NOTE = "The anonymous token is used implicitly when a request does not specify a token."


def _rfc3339(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def nomad_token(request: web.Request) -> str | None:
    token = request.headers.get("X-Nomad-Token", "").strip()
    if token:
        return token
    scheme, _, rest = request.headers.get("Authorization", "").partition(" ")
    return rest.strip() or None if scheme.lower() == "bearer" else None


def consul_token(request: web.Request) -> str | None:
    token = request.query.get("token") or request.headers.get("X-Consul-Token", "").strip()
    if token:
        return token
    scheme, _, rest = request.headers.get("Authorization", "").partition(" ")
    return (rest.strip().split(" ")[0] or None) if scheme.lower() == "bearer" else None


def _refuse(status: int, detail: str, hint: str | None = None) -> web.Response:
    return error_body(status, detail, hint)


# ------------------------------------------------------------------------------------------------- Nomad


def _nomad_allows(identity: Identity, need: NomadNeed, namespace: str) -> bool:
    if need.kind == "open" or identity.management:
        return True
    rules: NomadRules = identity.rules
    if need.kind == "token":
        return not identity.anonymous
    if need.kind == "management":
        return False
    if need.kind == "namespace":
        return any(rules.allows_namespace(namespace, c) for c in need.capabilities)
    if need.kind == "variable":
        return rules.allows_variable(namespace, need.path, need.capabilities[0])
    if need.kind == "variables":
        return True  # the handler leaves out what the token may not list (variable_allowed)
    return rules.allows(need.kind, need.capabilities[0])


def variable_allowed(request: web.Request, namespace: str, path: str, capability: str) -> bool:
    """Whether the request's token has ``capability`` on the variable at ``path`` (always true without ACLs):
    what handlers use to filter a list, or to leave ``Items`` out of a conflict answer, as Nomad does."""
    identity: Identity | None = request.get(IDENTITY)
    if identity is None or identity.management:
        return True
    rules: NomadRules = identity.rules
    return rules.allows_variable(namespace, path, capability)


def nomad_middleware(acl: ACLState[NomadRules]) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not acl.enabled:
            if request.path.startswith("/v1/acl/"):
                return _refuse(400, "ACL support disabled", "start the devcluster with --acl (or a --nomad-token)")
            return await handler(request)
        needs = nomad_needs(request.method, request.path)
        if needs == [NomadNeed("event-stream")]:
            needs = event_stream_needs(request.query.getall("topic", []))
        if needs == [NomadNeed("open")]:
            return await handler(request)
        try:
            identity = acl.resolve(nomad_token(request))
        except ACLError as exc:
            # Nomad answers "Permission denied" for a bad token, except where it looks the token up itself.
            detail = exc.message if request.path == "/v1/acl/token/self" else "Permission denied"
            return _refuse(403, detail, "send a valid token in X-Nomad-Token")
        namespace = request.query.get("namespace") or "default"
        for need in needs:
            if not _nomad_allows(identity, need, namespace):
                if need.kind == "token":
                    return _refuse(403, "ACL token not found", "send a token in X-Nomad-Token")
                who = "no token (anonymous)" if identity.anonymous else f"token {identity.token.name!r}"  # type: ignore[union-attr]
                return _refuse(403, "Permission denied", f"{who} lacks {need.describe()}")
        request[IDENTITY] = identity
        return await handler(request)

    return middleware


def _nomad_policy_json(policy: Policy, full: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"Name": policy.name, "Description": policy.description,
                           "CreateIndex": policy.create_index, "ModifyIndex": policy.modify_index}  # fmt: skip
    if full:
        out.update(Rules=policy.rules, JobACL=None)
    return out


def _nomad_token_json(acl: ACLState[NomadRules], token: Token, secret: bool = True) -> dict[str, Any]:
    names = [acl.policies[p].name for p in token.policies if p in acl.policies]
    out: dict[str, Any] = {
        "AccessorID": token.accessor_id,
        "Name": token.name,
        "Type": token.type,
        "Policies": names or None,
        "Roles": None,
        "Global": True,
        "Hash": "",
        "CreateTime": _rfc3339(token.create_time),
        "ExpirationTime": _rfc3339(token.expiration_time),
        "CreateIndex": token.create_index,
        "ModifyIndex": token.modify_index,
    }
    if secret:
        out["SecretID"] = token.secret_id
    return out


def _ttl(value: Any) -> float | None:
    if value in (None, "", 0):
        return None
    if isinstance(value, int | float):
        return float(value) / 1e9  # nanoseconds, as Nomad's JSON durations
    try:
        return parse_duration(str(value))
    except DurationError as exc:
        raise bad_request(f"ExpirationTTL: {exc}") from None


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    return data


def _acl_call(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ACLError as exc:
        raise APIError(exc.status, exc.message) from None


nomad_routes = web.RouteTableDef()


@nomad_routes.post("/v1/acl/bootstrap")
@nomad_routes.put("/v1/acl/bootstrap")
async def nomad_bootstrap(request: web.Request) -> web.Response:
    acl = request.app[NOMAD_ACL]
    secret = (await _json_body(request)).get("BootstrapSecret") or None
    if secret is not None:
        try:
            uuid.UUID(str(secret))
        except ValueError:
            raise APIError(400, "invalid acl token") from None
    token = _acl_call(lambda: acl.bootstrap(secret))
    return json_response(_nomad_token_json(acl, token))


@nomad_routes.get("/v1/acl/policies")
async def nomad_policies(request: web.Request) -> web.Response:
    acl = request.app[NOMAD_ACL]
    return json_response(
        [_nomad_policy_json(p, full=False) for p in sorted(acl.policies.values(), key=lambda p: p.name)]
    )


@nomad_routes.route("*", "/v1/acl/policy/{name}")
async def nomad_policy(request: web.Request) -> web.Response:
    acl = request.app[NOMAD_ACL]
    name = request.match_info["name"]
    if request.method == "GET":
        policy = acl.policy_by_name(name)
        if policy is None:
            raise APIError(404, "ACL policy not found")
        return json_response(_nomad_policy_json(policy))
    if request.method == "DELETE":
        policy = acl.policy_by_name(name)
        if policy is not None:
            acl.delete_policy(policy.id)
        return json_response(None)
    if request.method not in ("POST", "PUT"):
        raise APIError(405, f"{request.method} is not allowed here")
    body = await _json_body(request)
    if body.get("Name", name) != name:
        raise bad_request("Policy name does not match request path")
    _acl_call(lambda: acl.put_policy(name, str(body.get("Rules", "")), str(body.get("Description", ""))))
    return json_response(None)


@nomad_routes.get("/v1/acl/tokens")
async def nomad_tokens(request: web.Request) -> web.Response:
    acl = request.app[NOMAD_ACL]
    tokens = sorted(acl.tokens.values(), key=lambda t: t.create_index)
    return json_response([_nomad_token_json(acl, t, secret=False) for t in tokens])


def _nomad_policy_ids(acl: ACLState[NomadRules], names: Any) -> list[str]:
    ids = []
    for name in names or []:
        policy = acl.policy_by_name(str(name))
        if policy is None:
            raise APIError(400, f"policy not found: {name}")
        ids.append(policy.id)
    return ids


@nomad_routes.post("/v1/acl/token")
@nomad_routes.put("/v1/acl/token")
async def nomad_token_create(request: web.Request) -> web.Response:
    acl = request.app[NOMAD_ACL]
    body = await _json_body(request)
    if body.get("AccessorID"):
        return await _nomad_token_update(request, acl, str(body["AccessorID"]), body)
    type_ = str(body.get("Type") or CLIENT)
    ids = _nomad_policy_ids(acl, body.get("Policies"))
    ttl = _ttl(body.get("ExpirationTTL"))
    token = _acl_call(lambda: acl.create_token(str(body.get("Name", "")), type_, ids, ttl_s=ttl))
    return json_response(_nomad_token_json(acl, token))


async def _nomad_token_update(
    request: web.Request, acl: ACLState[NomadRules], accessor: str, body: dict[str, Any]
) -> web.Response:
    ids = _nomad_policy_ids(acl, body.get("Policies"))
    token = _acl_call(lambda: acl.update_token(accessor, str(body.get("Name", "")), ids))
    return json_response(_nomad_token_json(acl, token))


@nomad_routes.get("/v1/acl/token/self")
async def nomad_token_self(request: web.Request) -> web.Response:
    acl = request.app[NOMAD_ACL]
    identity: Identity = request[IDENTITY]
    assert identity.token is not None
    return json_response(_nomad_token_json(acl, identity.token))


@nomad_routes.route("*", "/v1/acl/token/{accessor}")
async def nomad_token_one(request: web.Request) -> web.Response:
    acl = request.app[NOMAD_ACL]
    accessor = request.match_info["accessor"]
    if request.method == "DELETE":
        acl.delete_token(accessor)
        return json_response(None)
    if request.method in ("POST", "PUT"):
        return await _nomad_token_update(request, acl, accessor, await _json_body(request))
    token = acl.tokens.get(accessor)
    if token is None:
        raise APIError(404, "ACL token not found")
    return json_response(_nomad_token_json(acl, token))


# ------------------------------------------------------------------------------------------------ Consul


def _denied(identity: Identity, permission: str, name: str | None) -> web.Response:
    on = f' on "{name}"' if name is not None else ""
    if identity.anonymous:
        detail = f"Permission denied: anonymous token lacks permission '{permission}'{on}. {_ANONYMOUS_NOTE}"
    else:
        assert identity.token is not None
        detail = f"Permission denied: token with AccessorID '{identity.token.accessor_id}' lacks permission " \
                 f"'{permission}'{on}"  # fmt: skip
    return _refuse(403, detail, "send a token whose policies grant it in X-Consul-Token")


def _c_allows(identity: Identity, segment: str, name: str, access: str = "read") -> bool:
    if identity.management:
        return True
    rules: ConsulRules = identity.rules
    return rules.allows(segment, name, access)


async def _consul_name(request: web.Request, state: ConsulState, need: ConsulNeed, parts: dict[str, str]) -> str:
    """The resource name a request is about (from its body or the state), for a need that does not name it."""
    source = need.name_from
    if source == "local_node":
        return state.catalog.local_node
    if source.startswith("body:"):
        try:
            body = norm(json.loads(await request.read() or b"{}"), "body")
        except (ValueError, APIError):
            return ""
        value = body.get(source[5:].lower())
        if source == "body:Node":
            return str(value or state.catalog.local_node)
        if source == "body:ServiceID":
            service = state.catalog.services.get(str(value or ""))
            return service.name if service is not None else ""
        return str(value or "")
    if source == "service_id":
        service = state.catalog.services.get(parts.get("id", ""))
        return service.name if service is not None else ""
    if source == "check":
        check = state.catalog.checks.get(parts.get("id", ""))
        return check.service_name if check is not None else ""
    if source == "session":
        session = state.sessions.sessions.get(parts.get("id", ""))
        return session.node if session is not None else state.catalog.local_node
    return need.name or ""


def consul_middleware(acl: ACLState[ConsulRules], state: Callable[[], ConsulState]) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not acl.enabled:
            if request.path.startswith("/v1/acl/"):
                return _refuse(401, "ACL support disabled", "start the devcluster with --acl (or a --consul-token)")
            return await handler(request)
        need, parts = consul_need(
            request.method, request.path, query_bool(request, "recurse") or "keys" in request.query
        )
        if need.kind == "open":
            return await handler(request)
        try:
            identity = acl.resolve(consul_token(request))
        except ACLError:
            return _refuse(403, "ACL not found", "send a valid token in X-Consul-Token")
        request[IDENTITY] = identity
        if need.kind == "token":
            if identity.anonymous:
                return _refuse(403, "ACL not found", "send a token in X-Consul-Token")
            return await handler(request)
        if need.kind == "need":
            segment, access = need.segment, need.access
            if segment in ("acl", "operator"):
                if not (identity.management or identity.rules.allows(segment, "", access)):
                    return _denied(identity, f"{segment}:{access}", None)
                return await handler(request)
            name = need.name if need.name is not None else await _consul_name(request, state(), need, parts)
            if need.name_from == "body:ServiceID" and not name:
                segment, name = "node", state().catalog.local_node  # a node check: node write
            if not _c_allows(identity, segment, name, access):
                return _denied(identity, f"{segment}:{access}", name)
            return await handler(request)
        response = await handler(request)
        return _filtered(response, need.filter, identity, request)

    return middleware


def _filtered(response: web.StreamResponse, kind: str, identity: Identity, request: web.Request) -> web.StreamResponse:
    if identity.management or not isinstance(response, web.Response) or response.status != 200 or not response.text:
        return response
    data = json.loads(response.text)

    def allow(segment: str, name: Any) -> bool:
        return _c_allows(identity, segment, str(name or ""))

    def node_and_service(node: Any, service: Any) -> bool:
        return allow("node", node) and (not service or allow("service", service))

    kept: Any = data
    if kind == "catalog_services" and isinstance(data, dict):
        kept = {name: tags for name, tags in data.items() if allow("service", name)}
    elif kind == "catalog_service" and isinstance(data, list):
        kept = [e for e in data if node_and_service(e.get("Node"), e.get("ServiceName"))]
    elif kind == "catalog_nodes" and isinstance(data, list):
        kept = [e for e in data if allow("node", e.get("Node"))]
    elif kind == "members" and isinstance(data, list):
        kept = [e for e in data if allow("node", e.get("Name"))]
    elif kind == "health_service" and isinstance(data, list):
        kept = [
            e for e in data
            if node_and_service((e.get("Node") or {}).get("Node"), (e.get("Service") or {}).get("Service"))
        ]  # fmt: skip
    elif kind == "checks" and isinstance(data, list):
        kept = [c for c in data if node_and_service(c.get("Node"), c.get("ServiceName"))]
    elif kind == "agent_services" and isinstance(data, dict):
        kept = {k: s for k, s in data.items() if allow("service", s.get("Service"))}
    elif kind == "agent_checks" and isinstance(data, dict):
        kept = {k: c for k, c in data.items() if node_and_service(c.get("Node"), c.get("ServiceName"))}
    elif kind == "one_service" and isinstance(data, dict):
        if not allow("service", data.get("Service")):
            return _denied(identity, "service:read", str(data.get("Service")))
    elif kind == "sessions" and isinstance(data, list):
        kept = [s for s in data if allow("session", s.get("Node"))]
    elif kind == "kv" and isinstance(data, list):
        kept = [e for e in data if allow("key", e if isinstance(e, str) else e.get("Key"))]
        if not kept and data and "keys" not in request.query:
            return web.Response(status=404, headers=_index_headers(response))
    if kept is data or kept == data:
        return response
    headers = _index_headers(response)
    if not identity.anonymous:
        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
    return web.Response(text=json.dumps(kept), content_type="application/json", headers=headers)


def _index_headers(response: web.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("x-consul-")}


def _consul_policy_json(policy: Policy, full: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"ID": policy.id, "Name": policy.name, "Description": policy.description,
                           "Datacenters": None, "Hash": "", "CreateIndex": policy.create_index,
                           "ModifyIndex": policy.modify_index}  # fmt: skip
    if full:
        out["Rules"] = policy.rules
    return out


def _consul_token_json(acl: ACLState[ConsulRules], token: Token, secret: bool = True) -> dict[str, Any]:
    if token.type == MANAGEMENT:
        policies = [{"ID": GLOBAL_MANAGEMENT_ID, "Name": "global-management"}]
    else:
        policies = [{"ID": p, "Name": acl.policies[p].name} for p in token.policies if p in acl.policies]
    out: dict[str, Any] = {
        "AccessorID": token.accessor_id,
        "Description": token.name,
        "Policies": policies,
        "Local": token.local,
        "CreateTime": _rfc3339(token.create_time),
        "ExpirationTime": _rfc3339(token.expiration_time),
        "Hash": "",
        "CreateIndex": token.create_index,
        "ModifyIndex": token.modify_index,
    }
    if secret:
        out["SecretID"] = token.secret_id
    return out


def _consul_policy_ids(acl: ACLState[ConsulRules], links: Any) -> tuple[list[str], bool]:
    """Policy ids of ``[{"ID"} | {"Name"}]``; True when global-management is among them."""
    ids: list[str] = []
    management = False
    for link in links or []:
        link = norm(link, "Policies") if isinstance(link, dict) else {}
        pid, name = str(link.get("id") or ""), str(link.get("name") or "")
        if pid == GLOBAL_MANAGEMENT_ID or name == "global-management":
            management = True
            continue
        policy = acl.policies.get(pid) if pid else acl.policy_by_name(name)
        if policy is None:
            raise APIError(400, f"ACL policy not found: {pid or name}")
        ids.append(policy.id)
    return ids, management


consul_routes = web.RouteTableDef()


@consul_routes.put("/v1/acl/bootstrap")
async def consul_bootstrap(request: web.Request) -> web.Response:
    acl = request.app[CONSUL_ACL]
    body = norm(await _json_body(request), "body")
    if acl.bootstrap_index:
        raise APIError(403, f"Permission denied: ACL bootstrap no longer allowed (reset index: {acl.bootstrap_index})")
    token = _acl_call(lambda: acl.bootstrap(body.get("bootstrapsecret") or None, "Bootstrap Token (Global Management)"))
    return json_response(_consul_token_json(acl, token))


@consul_routes.put("/v1/acl/policy")
async def consul_policy_create(request: web.Request) -> web.Response:
    acl = request.app[CONSUL_ACL]
    body = norm(await _json_body(request), "body")
    name = str(body.get("name") or "")
    if acl.policy_by_name(name) is not None:
        raise APIError(400, f"Invalid Policy: A Policy with Name {name!r} already exists")
    policy = _acl_call(lambda: acl.put_policy(name, str(body.get("rules") or ""), str(body.get("description") or "")))
    return json_response(_consul_policy_json(policy))


@consul_routes.get("/v1/acl/policies")
async def consul_policies(request: web.Request) -> web.Response:
    acl = request.app[CONSUL_ACL]
    return json_response([_consul_policy_json(p, full=False) for p in acl.policies.values()])


@consul_routes.get("/v1/acl/policy/name/{name}")
async def consul_policy_by_name(request: web.Request) -> web.Response:
    policy = request.app[CONSUL_ACL].policy_by_name(request.match_info["name"])
    if policy is None:
        raise APIError(403, "ACL not found")
    return json_response(_consul_policy_json(policy))


@consul_routes.route("*", "/v1/acl/policy/{id}")
async def consul_policy_one(request: web.Request) -> web.Response:
    acl = request.app[CONSUL_ACL]
    pid = request.match_info["id"]
    if request.method == "DELETE":
        return json_response(acl.delete_policy(pid))
    policy = acl.policies.get(pid)
    if policy is None:
        raise APIError(403, "ACL not found")
    if request.method == "PUT":
        body = norm(await _json_body(request), "body")
        name = str(body.get("name") or policy.name)
        policy = _acl_call(lambda: acl.put_policy(
            name, str(body.get("rules") or ""), str(body.get("description") or ""), policy_id=pid,
        ))  # fmt: skip
    return json_response(_consul_policy_json(policy))


@consul_routes.put("/v1/acl/token")
async def consul_token_create(request: web.Request) -> web.Response:
    acl = request.app[CONSUL_ACL]
    body = norm(await _json_body(request), "body")
    ids, management = _consul_policy_ids(acl, body.get("policies"))
    ttl = None
    if body.get("expirationttl"):
        try:
            ttl = parse_duration(str(body["expirationttl"]))
        except DurationError as exc:
            raise bad_request(f"ExpirationTTL: {exc}") from None
    token = _acl_call(lambda: acl.create_token(
        str(body.get("description") or ""), MANAGEMENT if management else CLIENT, ids,
        secret=body.get("secretid") or None, accessor=body.get("accessorid") or None, ttl_s=ttl,
        local=bool(body.get("local")),
    ))  # fmt: skip
    return json_response(_consul_token_json(acl, token))


@consul_routes.get("/v1/acl/tokens")
async def consul_tokens(request: web.Request) -> web.Response:
    acl = request.app[CONSUL_ACL]
    tokens = sorted(acl.tokens.values(), key=lambda t: t.create_index)
    return json_response([_consul_token_json(acl, t, secret=False) for t in tokens])


@consul_routes.get("/v1/acl/token/self")
async def consul_token_self(request: web.Request) -> web.Response:
    identity: Identity = request[IDENTITY]
    assert identity.token is not None
    return json_response(_consul_token_json(request.app[CONSUL_ACL], identity.token))


@consul_routes.route("*", "/v1/acl/token/{accessor}")
async def consul_token_one(request: web.Request) -> web.Response:
    acl = request.app[CONSUL_ACL]
    accessor = request.match_info["accessor"]
    if request.method == "DELETE":
        return json_response(acl.delete_token(accessor))
    token = acl.tokens.get(accessor)
    if token is None:
        raise APIError(403, "ACL not found")
    if request.method == "PUT":
        body = norm(await _json_body(request), "body")
        ids, _ = _consul_policy_ids(acl, body.get("policies"))
        description = str(body.get("description") or token.name)
        token = _acl_call(lambda: acl.update_token(accessor, description, ids))
    return json_response(_consul_token_json(acl, token))
