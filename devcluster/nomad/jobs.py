"""Job operations behind the HTTP API: register, stop/purge, scale, dispatch, and the job's read views."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from typing import Any

from chutes.devcluster.http_util import APIError, bad_request, not_found
from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.canonical import JobInvalid, canonicalize
from chutes.devcluster.nomad.cluster import NomadCluster
from chutes.devcluster.nomad.records import now_ns

SERVER_FIELDS = ("Status", "StatusDescription", "Stable", "Version", "SubmitTime", "CreateIndex", "ModifyIndex",
                 "JobModifyIndex", "Stop")  # fmt: skip
MAX_PAYLOAD = 16 * 1024


def _spec(job: models.Job) -> dict[str, Any]:
    return job.model_dump(mode="json", exclude=set(SERVER_FIELDS))


def job_status(cluster: NomadCluster, job: models.Job) -> str:
    """Nomad's job status: running while any allocation lives, pending while evaluations wait, else dead."""
    state = cluster.state
    if (job.Type or "") == "system" and not job.Stop:
        return "running"
    if job.ParameterizedJob is not None and not job.Dispatched:
        return "dead" if job.Stop else "running"
    allocs = state.job_allocs(job.ID or "")
    # Nomad's Allocation.TerminalStatus: an allocation told to stop no longer counts as running.
    if any(not a.terminal and a.desired_status == "run" for a in allocs):
        return "running"
    evals = state.job_evals(job.ID or "")
    if any(e.status in ("pending", "blocked") for e in evals):
        return "pending"
    if allocs or evals or job.Stop:
        return "dead"
    return "pending"


def job_json(cluster: NomadCluster, job: models.Job) -> dict[str, Any]:
    out = job.model_dump(mode="json")
    out["Status"] = job_status(cluster, job)
    return out


def job_stub(cluster: NomadCluster, job: models.Job, meta: bool = False) -> dict[str, Any]:
    out = {
        "ID": job.ID,
        "ParentID": job.ParentID or "",
        "Name": job.Name,
        "Namespace": job.Namespace,
        "Datacenters": job.Datacenters,
        "Multiregion": None,
        "Type": job.Type,
        "Priority": job.Priority,
        "Periodic": False,
        "ParameterizedJob": job.ParameterizedJob is not None,
        "Stop": bool(job.Stop),
        "Status": job_status(cluster, job),
        "StatusDescription": job.StatusDescription or "",
        "JobSummary": summary(cluster, job),
        "CreateIndex": job.CreateIndex,
        "ModifyIndex": job.ModifyIndex,
        "JobModifyIndex": job.JobModifyIndex,
        "SubmitTime": job.SubmitTime,
        "Version": job.Version,
    }
    if meta:
        out["Meta"] = job.Meta
    return out


def summary(cluster: NomadCluster, job: models.Job) -> dict[str, Any]:
    state = cluster.state
    groups: dict[str, dict[str, int]] = {
        g.Name or "": {"Queued": 0, "Complete": 0, "Failed": 0, "Running": 0, "Starting": 0, "Lost": 0, "Unknown": 0}
        for g in job.TaskGroups or []
    }
    for alloc in state.job_allocs(job.ID or ""):
        counts = groups.get(alloc.task_group)
        if counts is None:
            continue
        key = {"pending": "Starting", "running": "Running", "complete": "Complete", "failed": "Failed",
               "lost": "Lost"}.get(alloc.client_status, "Unknown")  # fmt: skip
        counts[key] += 1
    blocked = [e for e in state.job_evals(job.ID or "") if e.status == "blocked"]
    for evaluation in blocked[-1:]:
        for group, queued in evaluation.queued_allocations.items():
            if group in groups:
                groups[group]["Queued"] = queued
    children = {"Pending": 0, "Running": 0, "Dead": 0}
    for child in state.jobs.values():
        if child.ParentID == job.ID:
            children[job_status(cluster, child).capitalize()] = (
                children.get(job_status(cluster, child).capitalize(), 0) + 1
            )
    return {
        "JobID": job.ID,
        "Namespace": job.Namespace,
        "Summary": groups,
        "Children": children,
        "CreateIndex": job.CreateIndex,
        "ModifyIndex": job.ModifyIndex,
    }


def _register_response(cluster: NomadCluster, eval_id: str, job: models.Job) -> dict[str, Any]:
    evaluation = cluster.state.evals.get(eval_id)
    return {
        "EvalID": eval_id,
        "EvalCreateIndex": evaluation.create_index if evaluation else 0,
        "JobModifyIndex": job.JobModifyIndex,
        "Warnings": "",
        "Index": cluster.state.index.index,
        "LastContact": 0,
        "KnownLeader": True,
    }


def register(cluster: NomadCluster, request: models.JobRegisterRequest, path_id: str | None = None) -> dict[str, Any]:
    if request.Job is None:
        raise bad_request("Job must be specified", "send {'Job': {...}}")
    if path_id is not None and path_id != request.Job.ID:
        raise bad_request("Job ID does not match name")
    try:
        job = canonicalize(request.Job)
    except JobInvalid as exc:
        raise APIError(400, f"1 error occurred: {exc}", "fix the job and register it again") from None
    assert job.ID is not None
    state = cluster.state
    pools = {"all", "default"} | {n.node_pool for n in state.nodes.values()}
    if job.NodePool not in pools:
        raise bad_request(f'job "{job.ID}" is in nonexistent node pool "{job.NodePool}"')
    old = state.jobs.get(job.ID)
    if request.EnforceIndex:
        current = old.JobModifyIndex if old is not None else 0
        if current != (request.JobModifyIndex or 0):
            raise bad_request(
                f"Enforcing job modify index {request.JobModifyIndex or 0}: job "
                + ("exists with conflicting job modify index: " + str(current) if old else "does not exist")
            )
    if old is not None and old.Dispatched:
        raise bad_request("cannot update a dispatched job", "dispatch the parameterized parent again")
    if old is not None and request.PreserveCounts:
        counts = {g.Name: g.Count for g in old.TaskGroups or []}
        for group in job.TaskGroups or []:
            if group.Name in counts:
                group.Count = counts[group.Name]
    changed = old is None or bool(old.Stop) or _spec(old) != _spec(job)
    job.Stop = False
    job.Stable = False
    job.Status = "pending"
    job.SubmitTime = now_ns() if changed or old is None else old.SubmitTime
    job.Version = (old.Version or 0) + 1 if old is not None and changed else (old.Version if old is not None else 0)
    job.JobModifyIndex = state.index.index + 1 if changed else (old.JobModifyIndex if old else None)
    state.put_job(job)
    if job.ParameterizedJob is not None and not job.Dispatched:
        return _register_response(cluster, "", job)
    evaluation = cluster.submit_eval(job.ID, "job-register")
    return _register_response(cluster, evaluation.id, job)


def deregister(cluster: NomadCluster, job_id: str, purge: bool) -> dict[str, Any]:
    state = cluster.state
    job = state.jobs.get(job_id)
    if job is None:
        # Nomad 1.4.6+: deleting a job that is gone (never registered, purged) is a no-op, answered 200 with
        # zero values, so a retried delete is not an error.
        return {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": 0, "VolumeEvalID": "", "VolumeEvalIndex": 0,
                "Index": 0, "LastContact": 0, "KnownLeader": True}  # fmt: skip
    job.Stop = True
    job.JobModifyIndex = state.index.index + 1
    state.put_job(job)
    evaluation = cluster.submit_eval(job_id, "job-deregister")
    for child in [c for c in state.jobs.values() if c.ParentID == job_id and not c.Stop]:
        deregister(cluster, child.ID or "", purge)
    if purge:
        state.delete_job(job_id)
    return {
        "EvalID": evaluation.id,
        "EvalCreateIndex": evaluation.create_index,
        "JobModifyIndex": job.JobModifyIndex,
        "VolumeEvalID": "",
        "VolumeEvalIndex": 0,
        "Index": state.index.index,
        "LastContact": 0,
        "KnownLeader": True,
    }


def scale(cluster: NomadCluster, job_id: str, request: models.ScalingRequest) -> dict[str, Any]:
    state = cluster.state
    job = state.jobs.get(job_id)
    if job is None:
        raise not_found("job not found")
    target = request.Target or {}
    group_name = target.get("Group")
    if not group_name:
        raise bad_request("missing task group name for scaling action", "set Target.Group")
    group = next((g for g in job.TaskGroups or [] if g.Name == group_name), None)
    if group is None:
        raise bad_request(f"task group {group_name!r} specified for scaling does not exist in job")
    if job.ParameterizedJob is not None or (job.Type or "") in ("system", "sysbatch"):
        raise bad_request(
            f"cannot scale a {job.Type} job" if job.ParameterizedJob is None else "cannot scale a parameterized job"
        )
    previous = group.Count or 0
    eval_id = ""
    if request.Count is not None:
        deployment = state.latest_deployment(job_id)
        if deployment is not None and deployment.active and deployment.job_create_index == job.CreateIndex:
            raise bad_request(
                "job scaling blocked due to active deployment",
                f"deployment {deployment.id} is {deployment.status}: retry once it ends (or fail it)",
            )
        if request.Count < 0:
            raise bad_request("scaling action count can't be negative")
        if group.Scaling is not None and not request.PolicyOverride:
            if group.Scaling.Max is not None and request.Count > group.Scaling.Max:
                raise bad_request(
                    f"group count was greater than scaling policy maximum: {request.Count} > {group.Scaling.Max}"
                )
            if group.Scaling.Min is not None and request.Count < group.Scaling.Min:
                raise bad_request(
                    f"group count was less than scaling policy minimum: {request.Count} < {group.Scaling.Min}"
                )
        group.Count = request.Count
        job.Version = (job.Version or 0) + 1
        job.JobModifyIndex = state.index.index + 1
        job.SubmitTime = now_ns()
        job.Stop = False
        state.put_job(job)
        eval_id = cluster.submit_eval(job_id, "job-scaling").id
    events = cluster.scaling_events.setdefault(job_id, {}).setdefault(group_name, [])
    events.insert(
        0,
        {
            "Count": request.Count,
            "PreviousCount": previous,
            "Message": request.Message or "",
            "Error": bool(request.Error),
            "Meta": request.Meta,
            "Time": now_ns(),
            "EvalID": eval_id or None,
            "CreateIndex": state.index.index,
        },
    )
    del events[20:]
    return _register_response(cluster, eval_id, job)


def scale_status(cluster: NomadCluster, job_id: str) -> dict[str, Any]:
    state = cluster.state
    job = state.jobs.get(job_id)
    if job is None:
        raise not_found("job not found")
    groups = {}
    for group in job.TaskGroups or []:
        allocs = [a for a in state.job_allocs(job_id) if a.task_group == group.Name and a.desired_status == "run"]
        running = [a for a in allocs if a.client_status == "running"]
        healthy = [a for a in running if cluster.alloc_healthy(a)]
        groups[group.Name or ""] = {
            "Desired": group.Count,
            "Placed": len([a for a in allocs if not a.terminal]),
            "Running": len(running),
            "Healthy": len(healthy),
            "Unhealthy": len(running) - len(healthy),
            "Events": cluster.scaling_events.get(job_id, {}).get(group.Name or "") or None,
        }
    return {
        "JobID": job_id,
        "Namespace": job.Namespace,
        "JobCreateIndex": job.CreateIndex,
        "JobModifyIndex": job.JobModifyIndex,
        "JobStopped": bool(job.Stop),
        "TaskGroups": groups,
    }


def dispatch(
    cluster: NomadCluster, job_id: str, request: models.JobDispatchRequest, token: str | None
) -> dict[str, Any]:
    state = cluster.state
    parent = state.jobs.get(job_id)
    if parent is None:
        raise not_found("job not found")
    config = parent.ParameterizedJob
    if config is None or parent.Dispatched:
        raise bad_request(f"Specified job {job_id!r} is not a parameterized job")
    if parent.Stop:
        raise bad_request(f"Specified job {job_id!r} is stopped")
    token = token or request.idempotency_token
    if token:
        existing = state.dispatch_tokens.get(f"{job_id}/{token}")
        if existing and existing in state.jobs:
            child = state.jobs[existing]
            return {
                "DispatchedJobID": existing,
                "EvalID": "",
                "EvalCreateIndex": 0,
                "JobCreateIndex": child.CreateIndex,
                "Index": state.index.index,
            }
    payload = b""
    if request.Payload:
        try:
            payload = base64.b64decode(request.Payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("Payload must be base64 encoded") from None
    mode = config.Payload or "optional"
    if mode == "required" and not payload:
        raise bad_request("Payload is not provided but required by parameterized job")
    if mode == "forbidden" and payload:
        raise bad_request("Payload provided but forbidden by parameterized job")
    if len(payload) > MAX_PAYLOAD:
        raise bad_request(f"Payload exceeds maximum size; {len(payload)} > {MAX_PAYLOAD}")
    meta = dict(request.Meta or {})
    allowed = set(config.MetaRequired or []) | set(config.MetaOptional or [])
    missing = [k for k in config.MetaRequired or [] if k not in meta]
    if missing:
        raise bad_request(f"Dispatch did not provide required meta keys: {missing}")
    unpermitted = sorted(k for k in meta if k not in allowed)
    if unpermitted:
        raise bad_request(f"Dispatch provided unpermitted meta keys: {unpermitted}")
    prefix = f"{request.IdPrefixTemplate}-" if request.IdPrefixTemplate else ""
    child_id = f"{job_id}/dispatch-{prefix}{int(time.time())}-{secrets.token_hex(4)}"
    child = parent.model_copy(deep=True)
    child.ID = child_id
    child.Name = child_id
    child.ParentID = job_id
    child.Dispatched = True
    child.DispatchIdempotencyToken = token
    child.Payload = base64.b64encode(payload).decode() if payload else None
    child.Meta = {**(parent.Meta or {}), **meta} or None
    child.Version = 0
    child.Stop = False
    child.SubmitTime = now_ns()
    child.JobModifyIndex = state.index.index + 1
    state.put_job(child)
    if token:
        state.dispatch_tokens[f"{job_id}/{token}"] = child_id
    evaluation = cluster.submit_eval(child_id, "job-register")
    return {
        "DispatchedJobID": child_id,
        "EvalID": evaluation.id,
        "EvalCreateIndex": evaluation.create_index,
        "JobCreateIndex": child.CreateIndex,
        "Index": state.index.index,
    }
