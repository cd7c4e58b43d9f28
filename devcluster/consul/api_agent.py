"""Consul's agent, catalog, health and status endpoints."""

from __future__ import annotations

import os
import platform
import sys
import threading
from typing import Any

from aiohttp import web

from chutes.devcluster.consul.bodies import norm, parse_check, parse_service
from chutes.devcluster.consul.catalog import Catalog
from chutes.devcluster.consul.records import (
    CONSUL_BUILD_DATE,
    CONSUL_REVISION,
    CONSUL_VERSION,
    CRITICAL,
    DATACENTER,
    PASSING,
    STATUSES,
    WARNING,
)
from chutes.devcluster.consul.state import ConsulState
from chutes.devcluster.filter import FilterError, compile_filter
from chutes.devcluster.http_util import (
    APIError,
    Blocking,
    Handler,
    bad_request,
    json_response,
    not_found,
    query_bool,
    read_json,
)

CONSUL: web.AppKey[ConsulState] = web.AppKey("consul", ConsulState)
routes = web.RouteTableDef()


def _state(request: web.Request) -> ConsulState:
    return request.app[CONSUL]


def reply(data: Any, index: int) -> web.Response:
    """A Consul read's JSON answer with its index and the leader headers real Consul sends."""
    resp = json_response(data, index, "X-Consul-Index")
    resp.headers["X-Consul-KnownLeader"] = "true"
    resp.headers["X-Consul-LastContact"] = "0"
    return resp


async def blocking_index(request: web.Request, *topics: str) -> int:
    """Wait as a blocking query asks (``?index=&wait=``) for a change of ``topics``; their index now."""
    state = _state(request)
    blocking = Blocking.from_request(request)
    if blocking.active:
        await state.index.wait_topics(topics, blocking.index, blocking.wait_s)
    return state.index.of(*topics)


def _filtered(request: web.Request, items: list[Any]) -> list[Any]:
    expr = request.query.get("filter")
    if not expr:
        return items
    try:
        predicate = compile_filter(expr)
    except FilterError as exc:
        raise bad_request(f"Failed to create boolean expression evaluator: {exc}") from None
    return [item for item in items if predicate(item)]


# -- status and self ---------------------------------------------------------------------------------------


@routes.get("/v1/status/leader")
async def status_leader(request: web.Request) -> web.Response:
    return json_response("127.0.0.1:8300")


@routes.get("/v1/status/peers")
async def status_peers(request: web.Request) -> web.Response:
    return json_response(["127.0.0.1:8300"])


@routes.get("/v1/catalog/datacenters")
async def catalog_datacenters(request: web.Request) -> web.Response:
    return json_response([DATACENTER])


# Endpoints Consul forwards to the datacenter named by ``?dc=`` (the agent's own endpoints never look at it).
_DC_SCOPED = ("/v1/catalog/", "/v1/health/", "/v1/kv/", "/v1/session/", "/v1/txn", "/v1/query", "/v1/coordinate/")


@web.middleware
async def datacenter_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request for another datacenter fails as Consul's RPC forwarding does: there is only ``dc1`` here."""
    dc = request.query.get("datacenter") or request.query.get("dc")
    if dc and dc != DATACENTER and request.path.startswith(_DC_SCOPED):
        raise APIError(500, "No path to datacenter", f"this devcluster's only datacenter is {DATACENTER!r}")
    return await handler(request)


@routes.get("/v1/agent/self")
async def agent_self(request: web.Request) -> web.Response:
    catalog = _state(request).catalog
    node = catalog.local_node
    return json_response(
        {
            "Config": {
                "Datacenter": DATACENTER,
                "PrimaryDatacenter": DATACENTER,
                "NodeName": node,
                "NodeID": catalog.nodes[node],
                "Revision": CONSUL_REVISION,
                "Server": True,
                "Version": CONSUL_VERSION,
                "BuildDate": CONSUL_BUILD_DATE,
            },
            "DebugConfig": {"ConnectEnabled": False, "GRPCPort": -1, "GRPCTLSPort": -1, "DNSPort": -1, "DNSAddrs": []},
            "Coord": None,
            "Member": {
                "Name": node,
                "Addr": "127.0.0.1",
                "Port": 8301,
                "Status": 1,
                "Tags": {"dc": DATACENTER, "role": "consul", "build": CONSUL_VERSION, "segment": ""},
            },
            "Stats": _stats(catalog),
            "Meta": {},
        }
    )


def _stats(catalog: Catalog) -> dict[str, dict[str, str]]:
    """``Stats``: a map of maps of strings, as Consul's agent reports them."""
    checks = list(catalog.checks.values())
    return {
        "agent": {
            "check_monitors": "0",
            "check_ttls": str(sum(1 for c in checks if c.definition.kind == "ttl")),
            "checks": str(len(checks)),
            "services": str(len(catalog.services)),
        },
        "build": {"prerelease": "", "revision": CONSUL_REVISION, "version": CONSUL_VERSION, "version_metadata": ""},
        "runtime": {
            "arch": platform.machine() or "unknown",
            "os": sys.platform,
            "version": f"python{platform.python_version()}",
            "goroutines": str(threading.active_count()),
            "max_procs": str(os.cpu_count() or 1),
            "cpu_count": str(os.cpu_count() or 1),
        },
        "consul": {
            "server": "true",
            "known_servers": "1",
            "leader": "true",
            "leader_addr": "127.0.0.1:8300",
            "bootstrap": "true",
            "known_datacenters": "1",
        },
        "serf_lan": {"members": str(len(catalog.nodes)), "failed": "0", "left": "0"},
    }


@routes.get("/v1/agent/members")
async def agent_members(request: web.Request) -> web.Response:
    catalog = _state(request).catalog
    return json_response(
        [{"Name": n, "Addr": "127.0.0.1", "Port": 8301, "Status": 1, "Tags": {"dc": DATACENTER}} for n in catalog.nodes]
    )


# -- agent services and checks -----------------------------------------------------------------------------


@routes.put("/v1/agent/service/register")
async def service_register(request: web.Request) -> web.Response:
    state = _state(request)
    service, checks = parse_service(await read_json(request), state.catalog.local_node)
    state.catalog.register_service(service, checks, query_bool(request, "replace-existing-checks"))
    return web.Response(status=200)


@routes.put("/v1/agent/service/deregister/{service_id}")
async def service_deregister(request: web.Request) -> web.Response:
    service_id = request.match_info["service_id"]
    if not _state(request).catalog.deregister_service(service_id):
        raise not_found(f'Unknown service ID "{service_id}". Ensure that the service ID is passed, not the name.')
    return web.Response(status=200)


@routes.get("/v1/agent/services")
async def agent_services(request: web.Request) -> web.Response:
    catalog = _state(request).catalog
    items = [catalog.agent_service_json(s) for s in sorted(catalog.services.values(), key=lambda s: s.id)]
    return json_response({item["ID"]: item for item in _filtered(request, items)})


@routes.get("/v1/agent/service/{service_id}")
async def agent_service(request: web.Request) -> web.Response:
    catalog = _state(request).catalog
    service = catalog.services.get(request.match_info["service_id"])
    if service is None:
        raise not_found(f"unknown service ID: {request.match_info['service_id']}")
    return json_response(catalog.agent_service_json(service))


@routes.get("/v1/agent/checks")
async def agent_checks(request: web.Request) -> web.Response:
    catalog = _state(request).catalog
    items = [catalog.check_json(c) for c in sorted(catalog.checks.values(), key=lambda c: c.check_id)]
    return json_response({item["CheckID"]: item for item in _filtered(request, items)})


@routes.put("/v1/agent/check/register")
async def check_register(request: web.Request) -> web.Response:
    catalog = _state(request).catalog
    raw = await read_json(request)
    body = norm(raw, "check registration")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request("Missing check name", "set Name")
    check = parse_check(raw, name, name, catalog.local_node)
    try:
        catalog.register_check(check)
    except KeyError:
        raise not_found(f'ServiceID "{check.service_id}" does not exist') from None
    return web.Response(status=200)


@routes.put("/v1/agent/check/deregister/{check_id}")
async def check_deregister(request: web.Request) -> web.Response:
    check_id = request.match_info["check_id"]
    if not _state(request).catalog.deregister_check(check_id):
        raise not_found(f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.')
    return web.Response(status=200)


async def _ttl_update(request: web.Request, status: str, output: str) -> web.Response:
    catalog = _state(request).catalog
    check_id = request.match_info["check_id"]
    check = catalog.checks.get(check_id)
    if check is None:
        raise not_found(f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.')
    if check.definition.ttl_s is None:
        raise bad_request(f'CheckID "{check_id}" does not have associated TTL')
    catalog.set_status(check_id, status, output)
    return web.Response(status=200)


@routes.put("/v1/agent/check/pass/{check_id}")
async def check_pass(request: web.Request) -> web.Response:
    return await _ttl_update(request, PASSING, request.query.get("note", ""))


@routes.put("/v1/agent/check/warn/{check_id}")
async def check_warn(request: web.Request) -> web.Response:
    return await _ttl_update(request, WARNING, request.query.get("note", ""))


@routes.put("/v1/agent/check/fail/{check_id}")
async def check_fail(request: web.Request) -> web.Response:
    return await _ttl_update(request, CRITICAL, request.query.get("note", ""))


@routes.put("/v1/agent/check/update/{check_id}")
async def check_update(request: web.Request) -> web.Response:
    body = norm(await read_json(request) or {}, "check update")
    status = str(body.get("status") or "")
    if status not in STATUSES:
        raise bad_request(f"Invalid check status: '{status}'", f"use one of {', '.join(STATUSES)}")
    return await _ttl_update(request, status, str(body.get("output") or ""))


@routes.get("/v1/agent/health/service/name/{name}")
async def agent_health_by_name(request: web.Request) -> web.Response:
    catalog = _state(request).catalog
    services = catalog.instances(request.match_info["name"])
    if not services:
        raise not_found(f"ServiceName {request.match_info['name']} Not Found")
    out = []
    worst = PASSING
    for service in services:
        status = catalog.aggregated_status(service.id)
        worst = _worse(worst, status)
        checks = [catalog.check_json(c) for c in catalog.service_checks(service.id)]
        out.append({"AggregatedStatus": status, "Service": catalog.service_json(service), "Checks": checks})
    return web.json_response(out, status=_agent_health_code(worst))


@routes.get("/v1/agent/health/service/id/{service_id}")
async def agent_health_by_id(request: web.Request) -> web.Response:
    catalog = _state(request).catalog
    service = catalog.services.get(request.match_info["service_id"])
    if service is None:
        raise not_found(f"ServiceId {request.match_info['service_id']} not found")
    status = catalog.aggregated_status(service.id)
    checks = [catalog.check_json(c) for c in catalog.service_checks(service.id)]
    body = {"AggregatedStatus": status, "Service": catalog.service_json(service), "Checks": checks}
    return web.json_response(body, status=_agent_health_code(status))


def _worse(a: str, b: str) -> str:
    order = {PASSING: 0, WARNING: 1, CRITICAL: 2}
    return a if order[a] >= order[b] else b


def _agent_health_code(status: str) -> int:
    return {PASSING: 200, WARNING: 429}.get(status, 503)


# -- health ------------------------------------------------------------------------------------------------


@routes.get("/v1/health/service/{name}")
async def health_service(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    index = await blocking_index(request, f"svc:{name}")
    entries = _state(request).catalog.health_entries(
        name, passing=query_bool(request, "passing"), tags=request.query.getall("tag", [])
    )
    return reply(_filtered(request, entries), index)


@routes.get("/v1/health/checks/{name}")
async def health_checks(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    index = await blocking_index(request, f"svc:{name}")
    catalog = _state(request).catalog
    checks = [catalog.check_json(c) for c in sorted(catalog.checks.values(), key=lambda c: c.check_id)]
    return reply(_filtered(request, [c for c in checks if c["ServiceName"] == name]), index)


@routes.get("/v1/health/state/{state}")
async def health_state(request: web.Request) -> web.Response:
    wanted = request.match_info["state"]
    if wanted not in (*STATUSES, "any"):
        raise bad_request(f"Invalid state '{wanted}'", "use passing, warning, critical or any")
    index = await blocking_index(request, "checks")
    catalog = _state(request).catalog
    checks = [catalog.serf_check_json(n) for n in sorted(catalog.nodes)]
    checks += [catalog.check_json(c) for c in sorted(catalog.checks.values(), key=lambda c: c.check_id)]
    return reply(_filtered(request, [c for c in checks if wanted in ("any", c["Status"])]), index)


@routes.get("/v1/health/node/{node}")
async def health_node(request: web.Request) -> web.Response:
    node = request.match_info["node"]
    index = await blocking_index(request, "checks")
    catalog = _state(request).catalog
    checks = [catalog.serf_check_json(node)] if node in catalog.nodes else []
    checks += [catalog.check_json(c) for c in catalog.checks.values() if c.node == node]
    return reply(_filtered(request, checks), index)


# -- catalog -----------------------------------------------------------------------------------------------


@routes.get("/v1/catalog/services")
async def catalog_services(request: web.Request) -> web.Response:
    index = await blocking_index(request, "services")
    return reply(_state(request).catalog.catalog_services(), index)


@routes.get("/v1/catalog/service/{name}")
async def catalog_service(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    index = await blocking_index(request, f"svc:{name}")
    catalog = _state(request).catalog
    tags = request.query.getall("tag", [])
    items = [
        catalog.catalog_service_json(s) for s in catalog.instances(name) if not tags or all(t in s.tags for t in tags)
    ]
    return reply(_filtered(request, items), index)


@routes.get("/v1/catalog/nodes")
async def catalog_nodes(request: web.Request) -> web.Response:
    index = await blocking_index(request, "nodes")
    catalog = _state(request).catalog
    return reply(_filtered(request, [catalog.node_json(n) for n in sorted(catalog.nodes)]), index)


@routes.get("/v1/catalog/node/{node}")
async def catalog_node(request: web.Request) -> web.Response:
    node = request.match_info["node"]
    index = await blocking_index(request, "services", "nodes")
    catalog = _state(request).catalog
    if node not in catalog.nodes:
        return reply(None, index)
    services = {s.id: catalog.service_json(s) for s in catalog.services.values() if s.node == node}
    return reply({"Node": catalog.node_json(node), "Services": services}, index)
