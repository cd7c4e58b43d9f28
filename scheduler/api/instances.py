"""Endpoints for instances: the bundle (the instance token of a chute version) and a job run's outputs (the
run's own token, only while the run has not finished). Never a user key."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response

from chutes.scheduler.api.deps import InstanceDep, ServicesDep, run_credential
from chutes.scheduler.api.errors import APIError, ErrorOut
from chutes.scheduler.store import jobs as jobs_repo

router = APIRouter(tags=["instances"], responses={401: {"model": ErrorOut}})

MAX_OUTPUT_BYTES = 100 * 1024 * 1024  # per run, all files together
FINAL_STATUSES = {"succeeded", "failed", "cancelled"}


@router.get(
    "/v1/instances/bundle",
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}, "description": "the bundle's bytes"}},
)
async def bundle(version: InstanceDep) -> Response:
    """The bundle of the token's chute version; ``X-Chutes-Bundle-Sha256`` carries its sha256."""
    return Response(
        content=version.bundle,
        media_type="application/gzip",
        headers={"X-Chutes-Bundle-Sha256": version.sha256, "Cache-Control": "no-store"},
    )


def _safe_output_name(name: str) -> str:
    """A relative '/'-separated path inside the output folder: no '..', no absolute or hidden parts."""
    parts = name.replace("\\", "/").split("/")
    if (
        not name
        or len(name) > 255
        or name.startswith("/")
        or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        or any(ord(ch) < 32 for ch in name)
    ):
        raise APIError(422, f"invalid output file name {name!r}", "use paths relative to the job's output folder")
    return "/".join(parts)


@router.post(
    "/v1/instances/jobs/{run_id}/outputs",
    responses={404: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def upload_outputs(run_id: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    """Multipart upload of a job run's files (parts named ``files``, filename = path in the output folder).

    Authenticated with the run's token (``CHUTES_RUN_TOKEN``), which works only until the run has finished:
    the outputs of a finished run never change. ``status.json`` (always sent by the runtime) sets the run's
    outcome: ``status`` succeeded | failed | cancelled, ``error``, ``result``. Every file, status.json
    included, is kept as an output of the run.
    """
    await run_credential(request, services, run_id)
    form = await request.form(max_files=1024, max_part_size=MAX_OUTPUT_BYTES)
    files: list[tuple[str, bytes]] = []
    try:
        for field, value in form.multi_items():
            if isinstance(value, str):
                continue  # only files count; stray text fields are ignored
            content = await value.read()
            files.append((_safe_output_name(value.filename or field), content))
    finally:
        await form.close()
    status_doc = next((_parse_status(c) for n, c in files if n == "status.json"), None)
    async with services.store.session() as session:
        run = await jobs_repo.get_run(session, run_id)
        if run is None:
            raise APIError(404, f"job run {run_id} not found")
        if run.status in jobs_repo.FINAL:  # finished while this upload was arriving
            raise APIError(403, f"job run {run_id} has finished ({run.status}): its outputs cannot change")
        total = await jobs_repo.outputs_size(session, run_id) + sum(len(c) for _, c in files)
        if total > MAX_OUTPUT_BYTES:
            raise APIError(413, f"outputs of run {run_id} exceed {MAX_OUTPUT_BYTES} bytes")
        for name, content in files:
            await jobs_repo.put_output(session, run_id, name, content)
        if status_doc is not None:
            result = status_doc.get("result")
            if result is not None:
                run.result = result if isinstance(result, dict) else {"value": result}
            outcome = status_doc.get("status")
            if outcome in FINAL_STATUSES:
                error = status_doc.get("error")
                jobs_repo.set_status(run, str(outcome), error=str(error) if error else None)
        stored = [name for name, _, _ in await jobs_repo.list_outputs(session, run_id)]
    if run.status in jobs_repo.FINAL:
        from chutes.scheduler.runs import forget_token

        await forget_token(services, run)  # its token leaves the job's variable
    return {"run_id": run_id, "status": run.status, "outputs": stored}


def _parse_status(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise APIError(422, f"status.json is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise APIError(422, "status.json must be a JSON object")
    status = doc.get("status")
    if status is not None and status not in FINAL_STATUSES and status != "running":
        raise APIError(422, f"status.json: unknown status {status!r}", "use succeeded, failed or cancelled")
    return doc
