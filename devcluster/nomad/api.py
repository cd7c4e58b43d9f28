"""Nomad's HTTP API as the devcluster serves it (see docs/devcluster.md for the endpoint table)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from chutes.devcluster.filter import FilterError, compile_filter
from chutes.devcluster.http_util import (
    APIError,
    Blocking,
    bad_request,
    json_response,
    not_found,
    query_bool,
    read_json,
    validation_detail,
)
from chutes.devcluster.nomad import deployments, events, jobs, models
from chutes.devcluster.nomad.canonical import JobInvalid
from chutes.devcluster.nomad.cluster import NomadCluster
from chutes.devcluster.nomad.logs import stream_logs
from chutes.devcluster.nomad.nodes import NOMAD_VERSION
from chutes.devcluster.nomad.plan import plan_job
from chutes.devcluster.nomad.records import Deployment, Evaluation
from chutes.devcluster.nomad.state import NotFound

NOMAD: web.AppKey[NomadCluster] = web.AppKey("nomad", NomadCluster)
routes = web.RouteTableDef()
M = TypeVar("M", bound=BaseModel)
JOB_SUFFIXES = ("allocations", "evaluations", "summary", "scale", "dispatch", "evaluate", "plan", "versions",
                "deployments", "deployment")  # fmt: skip


def _cluster(request: web.Request) -> NomadCluster:
    return request.app[NOMAD]


async def _body(request: web.Request, model: type[M], root: str) -> M:
    data = await read_json(request)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise bad_request(f"{root}: request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(
            validation_detail(exc, root), "field names and types follow Nomad's API (PascalCase)"
        ) from None


async def _wait(request: web.Request, *topics: str) -> int:
    cluster = _cluster(request)
    blocking = Blocking.from_request(request)
    if blocking.active:
        await cluster.state.index.wait_topics(topics, blocking.index, blocking.wait_s)
    return cluster.state.index.of(*topics)


def _reply(data: Any, index: int) -> web.Response:
    resp = json_response(data, index, "X-Nomad-Index")
    resp.headers["X-Nomad-KnownLeader"] = "true"
    resp.headers["X-Nomad-LastContact"] = "0"
    return resp


def _select(request: web.Request, items: list[dict[str, Any]], id_key: str = "ID") -> list[dict[str, Any]]:
    prefix = request.query.get("prefix")
    if prefix:
        items = [i for i in items if str(i.get(id_key, "")).startswith(prefix)]
    expr = request.query.get("filter")
    if expr:
        try:
            predicate = compile_filter(expr)
        except FilterError as exc:
            raise bad_request(f"failed to read filter expression: {exc}") from None
        items = [i for i in items if predicate(i)]
    return items


# -- status and agent --------------------------------------------------------------------------------------


@routes.get("/v1/status/leader")
async def status_leader(request: web.Request) -> web.Response:
    return json_response("127.0.0.1:4647")


@routes.get("/v1/status/peers")
async def status_peers(request: web.Request) -> web.Response:
    return json_response(["127.0.0.1:4647"])


@routes.get("/v1/regions")
async def regions(request: web.Request) -> web.Response:
    return json_response(["global"])


@routes.get("/v1/agent/self")
async def agent_self(request: web.Request) -> web.Response:
    node = _cluster(request).local_node
    return json_response(
        {
            "config": {"Datacenter": node.datacenter, "NodeName": node.name, "Region": "global", "Version": {
                "Version": NOMAD_VERSION}},
            "member": {"Name": f"{node.name}.global", "Addr": "127.0.0.1", "Port": 4648, "Status": "alive",
                       "Tags": {"dc": node.datacenter, "region": "global", "build": NOMAD_VERSION}},
            "stats": {"client": {"node_id": node.id, "known_servers": "127.0.0.1:4647"},
                      "nomad": {"leader": "true", "server": "true"}},
        }
    )  # fmt: skip


@routes.get("/v1/agent/members")
async def agent_members(request: web.Request) -> web.Response:
    node = _cluster(request).local_node
    member = {"Name": f"{node.name}.global", "Addr": "127.0.0.1", "Port": 4648, "Status": "alive",
              "Tags": {"dc": node.datacenter, "region": "global"}}  # fmt: skip
    return json_response({"ServerName": node.name, "ServerRegion": "global", "ServerDC": node.datacenter,
                          "Members": [member]})  # fmt: skip


# -- jobs --------------------------------------------------------------------------------------------------


@routes.get("/v1/jobs")
async def jobs_list(request: web.Request) -> web.Response:
    index = await _wait(request, "jobs")
    cluster = _cluster(request)
    meta = query_bool(request, "meta")
    stubs = [jobs.job_stub(cluster, j, meta) for j in sorted(cluster.state.jobs.values(), key=lambda j: j.ID or "")]
    return _reply(_select(request, stubs), index)


@routes.post("/v1/jobs")
@routes.put("/v1/jobs")
async def jobs_register(request: web.Request) -> web.Response:
    body = await _body(request, models.JobRegisterRequest, "")
    return json_response(jobs.register(_cluster(request), body))


@routes.post("/v1/jobs/parse")
async def jobs_parse(request: web.Request) -> web.Response:
    raise APIError(
        501,
        "the devcluster does not parse HCL: /v1/jobs/parse needs Nomad's HCL2 parser",
        "send the job as JSON to POST /v1/jobs (e.g. render it with `nomad job run -output` or in Python)",
    )


def _split_job_path(cluster: NomadCluster, rest: str) -> tuple[str, str]:
    """``/v1/job/<id>[/<suffix>]`` where a dispatched child's ID itself contains a slash."""
    head, _, last = rest.rpartition("/")
    if head and last in JOB_SUFFIXES and (head in cluster.state.jobs or rest not in cluster.state.jobs):
        return head, last
    return rest, ""


def _job(cluster: NomadCluster, job_id: str) -> models.Job:
    job = cluster.state.jobs.get(job_id)
    if job is None:
        raise not_found("job not found")
    return job


@routes.route("*", "/v1/job/{rest:.+}")
async def job_dispatcher(request: web.Request) -> web.StreamResponse:
    cluster = _cluster(request)
    job_id, suffix = _split_job_path(cluster, request.match_info["rest"])
    handler = _JOB_ROUTES.get((request.method, suffix))
    if handler is None:
        raise APIError(405, f"{request.method} /v1/job/:id{'/' + suffix if suffix else ''} is not supported")
    return await handler(request, cluster, job_id)


async def _job_read(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    index = await _wait(request, f"job:{job_id}")
    return _reply(jobs.job_json(cluster, _job(cluster, job_id)), index)


async def _job_update(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    body = await _body(request, models.JobRegisterRequest, "")
    return json_response(jobs.register(cluster, body, path_id=job_id))


async def _job_delete(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    return json_response(jobs.deregister(cluster, job_id, purge=query_bool(request, "purge")))


async def _job_allocs(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    index = await _wait(request, f"job_allocs:{job_id}")
    allocs = cluster.state.job_allocs(job_id)
    if not query_bool(request, "all"):
        # Without ?all, Nomad lists the allocations of the job's current incarnation (not of purged ones).
        current = cluster.state.jobs.get(job_id)
        if current is not None:
            allocs = [a for a in allocs if a.create_index >= (current.CreateIndex or 0)]
    return _reply([a.stub_json() for a in allocs], index)


async def _job_evals(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    index = await _wait(request, f"job_evals:{job_id}")
    return _reply([e.to_json() for e in cluster.state.job_evals(job_id)], index)


async def _job_summary(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    index = await _wait(request, f"job:{job_id}")
    return _reply(jobs.summary(cluster, _job(cluster, job_id)), index)


async def _job_scale_get(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    index = await _wait(request, f"job:{job_id}")
    return _reply(jobs.scale_status(cluster, job_id), index)


async def _job_scale(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    body = await _body(request, models.ScalingRequest, "")
    return json_response(jobs.scale(cluster, job_id, body))


async def _job_dispatch(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    body = await _body(request, models.JobDispatchRequest, "")
    return json_response(jobs.dispatch(cluster, job_id, body, request.query.get("idempotency_token")))


async def _job_evaluate(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    _job(cluster, job_id)
    evaluation = cluster.submit_eval(job_id, "job-register")
    return json_response({"EvalID": evaluation.id, "EvalCreateIndex": evaluation.create_index,
                          "JobModifyIndex": cluster.state.jobs[job_id].JobModifyIndex})  # fmt: skip


async def _job_plan(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    body = await _body(request, models.JobPlanRequest, "")
    if body.Job is None or job_id != body.Job.ID:
        raise bad_request("Job ID does not match")
    try:
        return json_response(plan_job(cluster.state, body.Job))
    except JobInvalid as exc:
        raise bad_request(f"1 error occurred: {exc}") from None


async def _job_versions(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    index = await _wait(request, f"job:{job_id}")
    return _reply({"Versions": [jobs.job_json(cluster, _job(cluster, job_id))], "Diffs": None}, index)


async def _job_deployments(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    index = await _wait(request, f"job_deployments:{job_id}")
    job = cluster.state.jobs.get(job_id)
    found = cluster.state.job_deployments(job_id)
    if job is not None and not query_bool(request, "all"):
        found = [d for d in found if d.job_create_index == job.CreateIndex]
    return _reply([d.to_json() for d in reversed(found)], index)


async def _job_deployment(request: web.Request, cluster: NomadCluster, job_id: str) -> web.Response:
    """The latest deployment, or ``null`` (also for an unknown job), as Nomad answers."""
    index = await _wait(request, f"job_deployments:{job_id}")
    latest = cluster.state.latest_deployment(job_id)
    return _reply(latest.to_json() if latest is not None else None, index)


# -- event stream ------------------------------------------------------------------------------------------


@routes.get("/v1/event/stream")
async def event_stream(request: web.Request) -> web.StreamResponse:
    """Newline-delimited JSON: ``{"Index", "Events"}`` per batch from ``?index=``, ``{}`` heartbeats."""
    cluster = _cluster(request)
    try:
        topics = events.parse_topics(request.query.getall("topic", []))
        index = int(request.query.get("index", "0") or 0)
    except ValueError as exc:
        raise bad_request(f"invalid event stream request: {exc}") from None
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    broker = cluster.state.events
    loop = asyncio.get_running_loop()
    last_sent = loop.time()
    while not cluster.closing:
        batch = broker.after(index, topics)
        if batch:
            for event_index in sorted({e.index for e in batch}):
                group = [e.to_json() for e in batch if e.index == event_index]
                await response.write((json.dumps({"Index": event_index, "Events": group}) + "\n").encode())
            index = batch[-1].index
            last_sent = loop.time()
        elif loop.time() - last_sent >= events.HEARTBEAT_S:
            await response.write(b"{}\n")
            last_sent = loop.time()
        await broker.wait(max(0.05, events.HEARTBEAT_S - (loop.time() - last_sent)))
    return response


# -- deployments -------------------------------------------------------------------------------------------


def _deployment(cluster: NomadCluster, ref: str) -> Deployment:
    try:
        return cluster.state.deployment(ref)
    except NotFound:
        raise not_found("deployment not found") from None


@routes.get("/v1/deployments")
async def deployments_list(request: web.Request) -> web.Response:
    index = await _wait(request, "deployments")
    cluster = _cluster(request)
    items = [d.to_json() for d in sorted(cluster.state.deployments.values(), key=lambda d: d.create_index)]
    return _reply(_select(request, items), index)


@routes.get("/v1/deployment/{deployment_id}")
async def deployment_read(request: web.Request) -> web.Response:
    index = await _wait(request, f"deployment:{request.match_info['deployment_id']}")
    return _reply(_deployment(_cluster(request), request.match_info["deployment_id"]).to_json(), index)


@routes.get("/v1/deployment/allocations/{deployment_id}")
async def deployment_allocs(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    deployment = _deployment(cluster, request.match_info["deployment_id"])
    index = await _wait(request, "allocs")
    allocs = [a.stub_json() for a in cluster.state.job_allocs(deployment.job_id) if a.deployment_id == deployment.id]
    return _reply(allocs, index)


def _deployment_reply(cluster: NomadCluster, deployment: Deployment, evaluation: Evaluation) -> web.Response:
    return json_response({"EvalID": evaluation.id, "EvalCreateIndex": evaluation.create_index,
                          "DeploymentModifyIndex": deployment.modify_index, "RevertedJobVersion": None,
                          "Index": cluster.state.index.index})  # fmt: skip


async def _deployment_body(request: web.Request) -> dict[str, Any]:
    data = await read_json(request)
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    deployments.check_body_id(request.match_info["deployment_id"], data.get("DeploymentID"))
    return data


@routes.route("POST", "/v1/deployment/fail/{deployment_id}")
@routes.route("PUT", "/v1/deployment/fail/{deployment_id}")
async def deployment_fail(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    deployment = _deployment(cluster, request.match_info["deployment_id"])
    return _deployment_reply(cluster, deployment, cluster.deployments.fail(deployment))


@routes.route("POST", "/v1/deployment/pause/{deployment_id}")
@routes.route("PUT", "/v1/deployment/pause/{deployment_id}")
async def deployment_pause(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    body = await _deployment_body(request)
    deployment = _deployment(cluster, request.match_info["deployment_id"])
    return _deployment_reply(cluster, deployment, cluster.deployments.pause(deployment, bool(body.get("Pause"))))


@routes.route("POST", "/v1/deployment/promote/{deployment_id}")
@routes.route("PUT", "/v1/deployment/promote/{deployment_id}")
async def deployment_promote(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    await _deployment_body(request)
    deployment = _deployment(cluster, request.match_info["deployment_id"])
    return _deployment_reply(cluster, deployment, cluster.deployments.promote(deployment))


@routes.route("POST", "/v1/deployment/allocation-health/{deployment_id}")
@routes.route("PUT", "/v1/deployment/allocation-health/{deployment_id}")
async def deployment_alloc_health(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    body = await _deployment_body(request)
    deployment = _deployment(cluster, request.match_info["deployment_id"])
    healthy = [str(x) for x in body.get("HealthyAllocationIDs") or []]
    unhealthy = [str(x) for x in body.get("UnhealthyAllocationIDs") or []]
    return _deployment_reply(cluster, deployment, cluster.deployments.set_health(deployment, healthy, unhealthy))


_JobHandler = Callable[[web.Request, NomadCluster, str], Awaitable[web.StreamResponse]]
_JOB_ROUTES: dict[tuple[str, str], _JobHandler] = {
    ("GET", ""): _job_read,
    ("POST", ""): _job_update,
    ("PUT", ""): _job_update,
    ("DELETE", ""): _job_delete,
    ("GET", "allocations"): _job_allocs,
    ("GET", "evaluations"): _job_evals,
    ("GET", "summary"): _job_summary,
    ("GET", "scale"): _job_scale_get,
    ("POST", "scale"): _job_scale,
    ("PUT", "scale"): _job_scale,
    ("POST", "dispatch"): _job_dispatch,
    ("PUT", "dispatch"): _job_dispatch,
    ("POST", "evaluate"): _job_evaluate,
    ("PUT", "evaluate"): _job_evaluate,
    ("POST", "plan"): _job_plan,
    ("PUT", "plan"): _job_plan,
    ("GET", "versions"): _job_versions,
    ("GET", "deployments"): _job_deployments,
    ("GET", "deployment"): _job_deployment,
}


# -- allocations -------------------------------------------------------------------------------------------


@routes.get("/v1/allocations")
async def allocs_list(request: web.Request) -> web.Response:
    index = await _wait(request, "allocs")
    cluster = _cluster(request)
    resources = query_bool(request, "resources")
    task_states = request.query.get("task_states", "true").lower() != "false"
    stubs = [
        a.stub_json(resources=resources, task_states=task_states)
        for a in sorted(cluster.state.allocs.values(), key=lambda a: a.create_index)
    ]
    return _reply(_select(request, stubs), index)


def _alloc(cluster: NomadCluster, ref: str) -> Any:
    try:
        return cluster.state.alloc(ref)
    except NotFound:
        raise not_found("alloc not found") from None


@routes.get("/v1/allocation/{alloc_id}")
async def alloc_read(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    alloc = _alloc(cluster, request.match_info["alloc_id"])
    index = await _wait(request, f"alloc:{alloc.id}")
    return _reply(alloc.full_json(), index)


@routes.post("/v1/allocation/{alloc_id}/stop")
@routes.put("/v1/allocation/{alloc_id}/stop")
async def alloc_stop(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    alloc = _alloc(cluster, request.match_info["alloc_id"])
    evaluation = cluster.stop_alloc(alloc, "alloc was stopped through the API")
    return json_response({"EvalID": evaluation.id, "Index": cluster.state.index.index})


@routes.get("/v1/client/fs/logs/{alloc_id}")
async def alloc_logs(request: web.Request) -> web.StreamResponse:
    cluster = _cluster(request)
    alloc = _alloc(cluster, request.match_info["alloc_id"])
    return await stream_logs(request, cluster, alloc)


# -- evaluations -------------------------------------------------------------------------------------------


@routes.get("/v1/evaluations")
async def evals_list(request: web.Request) -> web.Response:
    index = await _wait(request, "evals")
    cluster = _cluster(request)
    items = [e.to_json() for e in sorted(cluster.state.evals.values(), key=lambda e: e.create_index)]
    job = request.query.get("job")
    if job:
        items = [e for e in items if e["JobID"] == job]
    status = request.query.get("status")
    if status:
        items = [e for e in items if e["Status"] == status]
    return _reply(_select(request, items), index)


@routes.get("/v1/evaluation/{eval_id}")
async def eval_read(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    try:
        evaluation = cluster.state.evaluation(request.match_info["eval_id"])
    except NotFound:
        raise not_found("eval not found") from None
    index = await _wait(request, f"eval:{evaluation.id}")
    out = evaluation.to_json()
    if query_bool(request, "related"):
        out["RelatedEvals"] = [
            e.stub_json() for e in cluster.state.job_evals(evaluation.job_id) if e.id != evaluation.id
        ]
    return _reply(out, index)


@routes.get("/v1/evaluation/{eval_id}/allocations")
async def eval_allocs(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    index = await _wait(request, "allocs")
    eval_id = request.match_info["eval_id"]
    return _reply([a.stub_json() for a in cluster.state.allocs.values() if a.eval_id == eval_id], index)


# -- nodes -------------------------------------------------------------------------------------------------


@routes.get("/v1/nodes")
async def nodes_list(request: web.Request) -> web.Response:
    index = await _wait(request, "nodes")
    cluster = _cluster(request)
    resources = query_bool(request, "resources")
    os_attrs = query_bool(request, "os")
    stubs = [n.stub_json(resources, os_attrs) for n in sorted(cluster.state.nodes.values(), key=lambda n: n.id)]
    return _reply(_select(request, stubs), index)


def _node(cluster: NomadCluster, ref: str) -> Any:
    try:
        return cluster.state.node(ref)
    except NotFound:
        raise not_found("node not found") from None


@routes.get("/v1/node/{node_id}")
async def node_read(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    node = _node(cluster, request.match_info["node_id"])
    index = await _wait(request, f"node:{node.id}", "nodes")
    return _reply(node.full_json(), index)


def _node_update_reply(cluster: NomadCluster, node: Any) -> web.Response:
    return json_response({"NodeModifyIndex": node.modify_index, "EvalIDs": None, "EvalCreateIndex": 0,
                          "Index": cluster.state.index.index})  # fmt: skip


async def _node_for_write(request: web.Request) -> Any:
    try:
        return _cluster(request).state.node(request.match_info["node_id"])
    except NotFound:
        raise APIError(500, "node not found") from None  # Nomad's RPC error is uncoded: a 500


@routes.route("POST", "/v1/node/{node_id}/drain")
@routes.route("PUT", "/v1/node/{node_id}/drain")
async def node_drain(request: web.Request) -> web.Response:
    """``{"DrainSpec": {"Deadline": ns, "IgnoreSystemJobs": bool} | null, "MarkEligible": bool, "Meta": {}}``."""
    data = await read_json(request) or {}
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    unknown = sorted(set(data) - {"DrainSpec", "MarkEligible", "Meta", "NodeID"})
    spec = data.get("DrainSpec")
    if unknown or (spec is not None and (not isinstance(spec, dict) or set(spec) - {"Deadline", "IgnoreSystemJobs"})):
        raise bad_request(f"unknown field(s) in the drain request: {unknown or sorted(spec or {})}")
    node = await _node_for_write(request)
    cluster = _cluster(request)
    cluster.drainer.set_drain(node, spec, bool(data.get("MarkEligible")), dict(data.get("Meta") or {}))
    return _node_update_reply(cluster, node)


@routes.route("POST", "/v1/node/{node_id}/eligibility")
@routes.route("PUT", "/v1/node/{node_id}/eligibility")
async def node_eligibility(request: web.Request) -> web.Response:
    data = await read_json(request) or {}
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    node = await _node_for_write(request)
    cluster = _cluster(request)
    cluster.drainer.set_eligibility(node, str(data.get("Eligibility") or ""))
    return _node_update_reply(cluster, node)


@routes.get("/v1/node/{node_id}/allocations")
async def node_allocs(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    node = _node(cluster, request.match_info["node_id"])
    index = await _wait(request, f"node_allocs:{node.id}")
    allocs = sorted((a for a in cluster.state.allocs.values() if a.node_id == node.id), key=lambda a: a.create_index)
    return _reply([a.full_json() for a in allocs], index)


def _meta_response(node: Any) -> dict[str, Any]:
    return {"Meta": node.all_meta(), "Dynamic": dict(node.dynamic_meta), "Static": dict(node.meta)}


@routes.get("/v1/client/metadata")
async def client_metadata(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    ref = request.query.get("node_id")
    node = _node(cluster, ref) if ref else cluster.local_node
    return json_response(_meta_response(node))


@routes.post("/v1/client/metadata")
@routes.put("/v1/client/metadata")
async def client_metadata_apply(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    body = await _body(request, models.NodeMetaApplyRequest, "")
    ref = body.NodeID or request.query.get("node_id")
    node = _node(cluster, ref) if ref else cluster.local_node
    changes = dict(body.Meta or {})
    for key in changes:
        if not key or any(c in key for c in " \t\n") or key in node.meta:
            raise bad_request(f"invalid or static meta key {key!r}", "dynamic meta keys cannot override static ones")
    cluster.set_node_meta(node, changes)
    return json_response(_meta_response(node))
