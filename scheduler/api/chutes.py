"""Chutes: deploy (manifest + bundle), list, get, delete, scale, share.

``{ref}`` is a chute id, or the name or slug of one of the caller's chutes; names may contain '/', so the
routes take the rest of the path (the routes with a suffix are declared before the bare ones).
Another user's private chute answers 404, like a missing one.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.scheduler import deploy, dev_users
from chutes.scheduler.api.deps import ServicesDep, UserDep
from chutes.scheduler.api.errors import APIError, ErrorOut
from chutes.scheduler.api.schemas import ChuteOut, ScaleIn, ShareIn
from chutes.scheduler.api.uploads import validate_upload
from chutes.scheduler.api.views import chute_out, shown_status, shown_statuses
from chutes.scheduler.images import flow as image_flow
from chutes.scheduler.services import Services
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute, User
from chutes.scheduler.store.users import Principal

router = APIRouter(
    tags=["chutes"],
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 502: {"model": ErrorOut}, 503: {"model": ErrorOut}},
)

NOT_FOUND_HINT = "list your chutes with GET /v1/chutes (a chute is named by its id, name or slug)"


async def find_chute(services: Services, principal: Principal, ref: str) -> Chute:
    """The chute ``ref`` names, if the caller may see it; 404 otherwise."""
    async with services.store.session() as session:
        chute = await chutes_repo.resolve(session, principal, ref)
    if chute is None:
        raise APIError(404, f"chute {ref!r} not found", NOT_FOUND_HINT)
    return chute


async def owned_chute(services: Services, principal: Principal, ref: str, action: str = "change it") -> Chute:
    """The chute ``ref`` names, if the caller owns it (or is an admin); 404 if invisible, 403 if only visible
    (shared with the caller, or public: sharing grants calling, nothing more)."""
    chute = await find_chute(services, principal, ref)
    if chute.owner_id == principal.user_id or principal.is_admin:
        return chute
    async with services.store.session() as session:
        allowed = await chutes_repo.manages(session, principal, chute)  # a dev stack's adopter
    if not allowed:
        raise APIError(403, f"only the owner of {chute.name!r} can {action}", "sharing a chute lets you call it")
    return chute


async def user_by_ref(session: AsyncSession, ref: str) -> User | None:
    """A user by name or by id (``chutes share --user-id`` takes either, as in Chutes)."""
    return await users_repo.get_user_by_name(session, ref) or await users_repo.get_user(session, ref)


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, f"the bundle is over the {limit}-byte limit", "bundle less code")
    return data


@router.post(
    "/v1/chutes",
    response_model=ChuteOut,
    status_code=202,
    responses={403: {"model": ErrorOut}, 409: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def deploy_chute(
    principal: UserDep,
    services: ServicesDep,
    manifest: Annotated[str, Form(description="the manifest, JSON (chutes inspect --json)")],
    bundle: Annotated[UploadFile, File(description="the bundle, a tar.gz built by chutes.bundle")],
    public: Annotated[bool, Form(description="any user may call it (admins only)")] = False,
    image: Annotated[
        str | None, Form(description="id of an image built by POST /v1/images: its instances run in it")
    ] = None,
) -> ChuteOut:
    """Deploy a chute, or a new version of it. Answers once the job is registered; follow the events for progress.

    A chute that no live node can take is refused with 409 and the reasons (nothing changes). ``public`` (each
    deploy sets it) lets every user call the chute; as Chutes asks a permission for it, only admins may set it.
    """
    if public and not principal.is_admin:
        raise APIError(
            403,
            "only admins may deploy a public chute (Chutes, too, asks a permission for public chutes)",
            "deploy it without --public and let others call it with `chutes share --chute-id CHUTE --user-id USER`",
        )
    data = await _read_upload(bundle, services.config.max_bundle_bytes)
    adopt_users = services.config.dev_adopt_users
    upload = await validate_upload(
        manifest, data, principal, services.config.max_bundle_bytes, services.config.max_json_depth,
        any_username=adopt_users,
    )  # fmt: skip
    if image:
        upload = dataclasses.replace(upload, image_ref=await image_flow.ready_ref(services, principal, image))
    adoption = None
    if adopt_users and dev_users.foreign(principal, upload.manifest.username):
        adoption = await dev_users.adopt(services, upload.manifest.username)
    chute, placement = await deploy.deploy(services, principal, upload)
    if adoption is not None:
        await dev_users.share_with_caller(services, principal, chute.id, adoption)
    async with services.store.session() as session:
        row = await chutes_repo.get_chute(session, chute.id)
        if row is not None and row.public != public:
            row.public = public
        chute = row or chute
        shared = await chutes_repo.shared_with(session, chute.id)
    return chute_out(chute, shared, placement)


@router.get("/v1/chutes", response_model=list[ChuteOut])
async def list_chutes(principal: UserDep, services: ServicesDep, all: bool = False) -> list[ChuteOut]:
    """The caller's chutes and those shared with them (``?all=true``: every chute, for admins)."""
    async with services.store.session() as session:
        chutes = await chutes_repo.list_visible(session, principal, everyone=all)
        shared = {c.id: await chutes_repo.shared_with(session, c.id) for c in chutes}
    shown = await shown_statuses(services, chutes)
    return [_with_status(chute_out(c, shared[c.id]), shown[c.id]) for c in chutes]


def _with_status(out: ChuteOut, shown: tuple[str, str]) -> ChuteOut:
    return out.model_copy(update={"status": shown[0], "status_detail": shown[1]})


@router.post("/v1/chutes/{ref:path}/scale", response_model=ChuteOut, responses={409: {"model": ErrorOut}})
async def scale_chute(ref: str, body: ScaleIn, principal: UserDep, services: ServicesDep) -> ChuteOut:
    """Set the number of instances (0 … max_instances)."""
    chute = await owned_chute(services, principal, ref)
    chute = await deploy.scale(services, chute, body.instances)
    return chute_out(chute)


@router.post("/v1/chutes/{ref:path}/share", response_model=ChuteOut)
async def share_chute(ref: str, body: ShareIn, principal: UserDep, services: ServicesDep) -> ChuteOut:
    """Let another user call this chute."""
    chute = await owned_chute(services, principal, ref)
    async with services.store.session() as session:
        user = await user_by_ref(session, body.username)
        if user is None:
            raise APIError(404, f"user {body.username!r} not found", "name the user by username or user id")
        if user.id == chute.owner_id:
            raise APIError(422, "a chute is always shared with its owner")
        await chutes_repo.share(session, chute, user)
        shared = await chutes_repo.shared_with(session, chute.id)
    await services.announce_change(routes=[(chute.username, chute.slug)])
    return chute_out(chute, shared)


@router.delete("/v1/chutes/{ref:path}/share/{username}", status_code=204)
async def unshare_chute(ref: str, username: str, principal: UserDep, services: ServicesDep) -> Response:
    """Stop sharing this chute with a user (idempotent)."""
    chute = await owned_chute(services, principal, ref)
    async with services.store.session() as session:
        user = await user_by_ref(session, username)
        if user is None:
            raise APIError(404, f"user {username!r} not found", "name the user by username or user id")
        await chutes_repo.unshare(session, chute, user)
    await services.announce_change(routes=[(chute.username, chute.slug)])
    return Response(status_code=204)


@router.get("/v1/chutes/{ref:path}", response_model=ChuteOut)
async def get_chute(ref: str, principal: UserDep, services: ServicesDep) -> ChuteOut:
    """One chute by id, name or slug; its status as its instances are now (Consul health included)."""
    chute = await find_chute(services, principal, ref)
    shared: list[str] = []
    if chute.owner_id == principal.user_id or principal.is_admin:
        async with services.store.session() as session:
            shared = await chutes_repo.shared_with(session, chute.id)
    return _with_status(chute_out(chute, shared), await shown_status(services, chute))


@router.delete("/v1/chutes/{ref:path}", status_code=204)
async def delete_chute(ref: str, principal: UserDep, services: ServicesDep) -> Response:
    """Delete a chute: purge its Nomad job (and so its instances and their Consul services) and its records."""
    chute = await owned_chute(services, principal, ref)
    await deploy.delete(services, chute)
    return Response(status_code=204)
