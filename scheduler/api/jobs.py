"""Job runs: dispatch one run of a chute's job method (a parameterized Nomad batch job), read its state and outputs."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Body, Response

from chutes.scheduler import runs
from chutes.scheduler.api.chutes import find_chute
from chutes.scheduler.api.deps import ServicesDep, UserDep
from chutes.scheduler.api.errors import APIError, ErrorOut
from chutes.scheduler.api.schemas import JobRunOut
from chutes.scheduler.services import Services
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import jobs as jobs_repo
from chutes.scheduler.store.models import JobRun
from chutes.scheduler.store.users import Principal

router = APIRouter(tags=["jobs"], responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})

MAX_INPUT_BYTES = 12 * 1024  # Nomad takes dispatch payloads up to 16 KiB, base64 makes them a third larger


async def run_out(services: Services, run: JobRun) -> JobRunOut:
    async with services.store.session() as session:
        outputs = await jobs_repo.list_outputs(session, run.id)
    return JobRunOut(
        run_id=run.id, chute_id=run.chute_id, job_name=run.job_name, status=run.status, nomad_job_id=run.nomad_job_id,
        created_at=run.created_at, updated_at=run.updated_at, finished_at=run.finished_at, error=run.error,
        result=run.result, outputs=[{"name": n, "size": s, "sha256": h} for n, s, h in outputs],
    )  # fmt: skip


async def visible_run(services: Services, principal: Principal, run_id: str) -> JobRun:
    async with services.store.session() as session:
        run = await jobs_repo.get_run(session, run_id)
        chute = await chutes_repo.get_chute(session, run.chute_id) if run else None
        visible = run is not None and (
            run.user_id == principal.user_id
            or principal.is_admin
            or (chute is not None and chute.owner_id == principal.user_id)
        )
    if run is None or not visible:
        raise APIError(404, f"job run {run_id!r} not found")
    return run


@router.post(
    "/v1/jobs/{ref:path}/{job_name}",
    response_model=JobRunOut,
    status_code=202,
    responses={413: {"model": ErrorOut}, 422: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
async def dispatch(
    ref: str,
    job_name: str,
    principal: UserDep,
    services: ServicesDep,
    payload: dict[str, Any] | None = Body(None, description="the job's input, a JSON object"),
) -> JobRunOut:
    """Dispatch one run of ``job_name`` with a JSON input; the answer carries its ``run_id``."""
    chute = await find_chute(services, principal, ref)
    names = [j.get("name") for j in chute.manifest.get("jobs", [])]
    if job_name not in names:
        known = ", ".join(str(n) for n in names) or "none"
        raise APIError(404, f"chute {chute.name!r} has no job {job_name!r}", f"its jobs: {known}")
    body = payload or {}
    if len(json.dumps(body)) > MAX_INPUT_BYTES:
        raise APIError(413, f"the job input is over {MAX_INPUT_BYTES} bytes", "pass large inputs by reference (a URL)")
    async with services.store.session() as session:
        run = await jobs_repo.create_run(
            session, chute_id=chute.id, job_name=job_name, user_id=principal.user_id, version=chute.version,
            input=body,
        )  # fmt: skip
    run = await runs.dispatch_run(services, chute, run)
    return await run_out(services, run)


@router.get("/v1/jobs/{run_id}", response_model=JobRunOut)
async def get_run(run_id: str, principal: UserDep, services: ServicesDep) -> JobRunOut:
    """A run's state (refreshed from Nomad while it is unfinished) and its uploaded outputs."""
    run = await visible_run(services, principal, run_id)
    run = await runs.refresh_run(services, run)
    return await run_out(services, run)


@router.get("/v1/jobs/{run_id}/outputs/{name:path}", response_class=Response)
async def get_output(run_id: str, name: str, principal: UserDep, services: ServicesDep) -> Response:
    """One output file of a run."""
    await visible_run(services, principal, run_id)
    async with services.store.session() as session:
        output = await jobs_repo.get_output(session, run_id, name)
    if output is None:
        raise APIError(404, f"run {run_id} has no output {name!r}")
    return Response(
        output.content, media_type="application/octet-stream", headers={"X-Chutes-Output-Sha256": output.sha256}
    )
