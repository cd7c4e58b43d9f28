"""Images built by the platform: upload a build context (which builds it, unless built already), list, get, logs,
delete; and the endpoint a build task fetches its context from, with its own build credential."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from chutes.image.pack import read_archive
from chutes.scheduler.api.deps import ServicesDep, UserDep, bearer_token
from chutes.scheduler.api.errors import APIError, ErrorOut
from chutes.scheduler.images import flow
from chutes.scheduler.images.build import build_context
from chutes.scheduler.images.wheel import runtime_wheel
from chutes.scheduler.nomad_api import NomadError
from chutes.scheduler.services import Services
from chutes.scheduler.store import images as images_repo
from chutes.scheduler.store.image_models import ImageRow
from chutes.scheduler.store.secrets import token_secret
from chutes.scheduler.store.users import Principal

log = logging.getLogger(__name__)
router = APIRouter(tags=["images"], responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})

CONTEXT_TYPES = ("application/gzip", "application/x-gzip", "application/x-tar+gzip", "application/octet-stream")
BUILDS_HEADER = "X-Chutes-Builds"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ImageOut(BaseModel):
    image_id: str
    name: str
    tag: str
    status: str  # queued | building | ready | failed
    username: str
    kind: str  # image: built from an Image; base: the runtime layer on an image reference
    base: str | None = None
    ref: str | None = None  # <registry>/<username>/<name>:<tag>@sha256:<digest>, once ready
    digest: str | None = None
    runtime_version: str
    cache_hit: bool = False  # this upload started nothing: the image was built (or being built) already
    build_job_id: str | None = None
    log_location: str | None = None
    error: str | None = None
    context_bytes: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    build_seconds: float | None = None


def image_out(row: ImageRow, cache_hit: bool = False) -> ImageOut:
    seconds = None
    if row.started_at is not None:
        seconds = round((row.finished_at or time.time()) - row.started_at, 3)
    return ImageOut(
        image_id=row.id, name=row.name, tag=row.tag, status=row.status, username=row.username, kind=row.kind,
        base=row.base, ref=row.ref, digest=row.digest, runtime_version=row.runtime_version, cache_hit=cache_hit,
        build_job_id=row.build_job_id, log_location=row.log_location, error=row.error,
        context_bytes=row.context_bytes, created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, build_seconds=seconds,
    )  # fmt: skip


async def visible_image(services: Services, principal: Principal, image_id: str) -> ImageRow:
    """The image, if the caller owns it (or is an admin); 404 otherwise (ids of others cannot be probed)."""
    async with services.store.session() as session:
        row = await images_repo.get(session, image_id) if len(image_id) <= 64 else None
    if row is None or (row.owner_id != principal.user_id and not principal.is_admin):
        raise APIError(404, f"image {image_id[:64]!r} not found", "list yours with `chutes images list`")
    return row


async def find_image(services: Services, principal: Principal, ref: str) -> ImageRow:
    """An image by id, by a unique id prefix (8+ characters), or by ``name:tag`` (the newest of that name)."""
    async with services.store.session() as session:
        rows = await images_repo.list_images(session, None if principal.is_admin else principal.user_id)
    exact = [r for r in rows if r.id == ref]
    if exact:
        return exact[0]
    found = [r for r in rows if len(ref) >= 8 and r.id.startswith(ref)]
    if not found:
        name, _, tag = ref.partition(":")
        found = [r for r in rows if r.name == name and (not tag or r.tag == tag)][:1]
    if len(found) != 1:
        hint = "give more of its id" if found else "list yours with `chutes images list`"
        raise APIError(404, f"image {ref[:80]!r} not found" + (" (ambiguous)" if found else ""), hint)
    return found[0]


@router.post(
    "/v1/images",
    response_model=ImageOut,
    status_code=202,
    responses={
        409: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut}, 429: {"model": ErrorOut}
    },
)  # fmt: skip
async def upload(request: Request, principal: UserDep, services: ServicesDep, rebuild: bool = False) -> ImageOut:
    """Upload a build context (the body: a tar.gz packed by ``chutes build``) and build it.

    The same context built already (or being built) answers that image, ``cache_hit`` true, and starts nothing;
    a failed one stays failed unless ``?rebuild=true``.
    """
    if not services.config.registry:
        raise flow.not_configured()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in CONTEXT_TYPES:
        raise APIError(415, f"a build context is a gzipped tar, not {kind or 'no content type'}",
                       "send it as application/gzip (chutes build does)")  # fmt: skip
    body = await request.body()
    if len(body) > services.config.max_context_bytes:
        raise APIError(413, f"the build context is over {services.config.max_context_bytes} bytes",
                       "add() less to the image (download large files in a RUN step)")  # fmt: skip
    row, cache_hit = await flow.submit(services, principal, body, rebuild=rebuild)
    return image_out(row, cache_hit)


@router.get("/v1/images", response_model=list[ImageOut])
async def list_images(principal: UserDep, services: ServicesDep, response: Response) -> list[ImageOut]:
    """Your images (an admin: everyone's), newest first. The header ``X-Chutes-Builds: on|off`` says whether
    this scheduler builds images (a registry is configured)."""
    response.headers[BUILDS_HEADER] = "on" if services.config.registry else "off"
    async with services.store.session() as session:
        rows = await images_repo.list_images(session, None if principal.is_admin else principal.user_id)
    return [image_out(r) for r in rows]


@router.get("/v1/images/{ref}", response_model=ImageOut)
async def get_image(ref: str, principal: UserDep, services: ServicesDep) -> ImageOut:
    """One image by id (or a unique id prefix, or ``name:tag``)."""
    row = await find_image(services, principal, ref)
    if row.status in images_repo.ACTIVE:
        try:
            row = await flow.refresh(services, row.id) or row
        except NomadError as exc:  # the stored state, until Nomad answers again
            log.warning("refreshing image %s: %s", row.id[:12], exc)
    return image_out(row)


@router.get(
    "/v1/images/{ref}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "one JSON object per log line"}},
)
async def image_logs(ref: str, principal: UserDep, services: ServicesDep, follow: bool = False) -> StreamingResponse:
    """The build's output as JSON lines ``{"image_id", "line"}``; ``?follow=true`` streams it while it builds."""
    row = await find_image(services, principal, ref)

    async def body() -> AsyncIterator[bytes]:
        async for line in flow.log_lines(services, row.id, follow):
            yield (json.dumps({"image_id": row.id, "line": line}) + "\n").encode()

    return StreamingResponse(body(), media_type="application/x-ndjson", headers=SSE_HEADERS)


@router.delete("/v1/images/{ref}", status_code=204, response_class=Response)
async def delete_image(ref: str, principal: UserDep, services: ServicesDep) -> Response:
    """Forget an image (its build stops; the registry keeps what was pushed)."""
    row = await find_image(services, principal, ref)
    await flow.delete(services, row)
    return Response(status_code=204)


@router.get("/v1/internal/images/{image_id}/context", response_class=Response, include_in_schema=False)
async def build_task_context(image_id: str, request: Request, services: ServicesDep) -> Response:
    """The build task's download: the context with the runtime layer, for the current attempt's credential only."""
    token = bearer_token(request)
    unauthorized = APIError(401, "invalid build credential", "only the image's own build task can fetch it")
    unauthorized.headers = {"WWW-Authenticate": "Bearer"}
    if not token.startswith(images_repo.BUILD_TOKEN_PREFIX):
        raise unauthorized
    async with services.store.session() as session:
        row = await images_repo.get(session, image_id) if len(image_id) == 64 else None
        secret = await token_secret(session)
    if row is None or not images_repo.is_build_token(secret, row.id, row.attempt, token):
        raise unauthorized
    if row.status not in images_repo.ACTIVE:
        raise APIError(403, f"the build of image {image_id[:12]} has finished ({row.status})")
    context = read_archive(row.context, services.config.max_context_bytes)
    wheel = runtime_wheel()
    if wheel.version != row.runtime_version:
        raise APIError(409, "this scheduler runs another runtime version than the build was started with",
                       "the build is retried by `chutes build --rebuild`")  # fmt: skip
    return Response(build_context(context, wheel), media_type="application/gzip")
