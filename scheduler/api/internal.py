"""The internal API for gateways (an admin key or a key with the ``gateway`` role).

``authenticate`` resolves a caller's API key, ``routes`` tells a gateway how to reach and sign for a chute,
``wake`` asks for at least one instance of a chute scaled to zero.
"""

from __future__ import annotations

from fastapi import APIRouter

from chutes.manifest import CordSpec
from chutes.scheduler import deploy
from chutes.scheduler.api.deps import GatewayDep, ServicesDep
from chutes.scheduler.api.errors import APIError, ErrorOut
from chutes.scheduler.api.schemas import AuthenticateIn, Me, RouteInfoOut, WakeOut
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import users as users_repo

router = APIRouter(tags=["internal"], responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})


@router.post("/v1/internal/authenticate", response_model=Me)
async def authenticate(body: AuthenticateIn, _: GatewayDep, services: ServicesDep) -> Me:
    """The user behind an API key; 401 for an unknown or revoked key."""
    async with services.store.session() as session:
        principal = await users_repo.authenticate(session, body.api_key)
    if principal is None:
        raise APIError(401, "invalid or revoked API key")
    return Me(user_id=principal.user_id, username=principal.username, is_admin=principal.is_admin)


@router.get("/v1/internal/routes/{username}/{slug}", response_model=RouteInfoOut, responses={404: {"model": ErrorOut}})
async def route(username: str, slug: str, _: GatewayDep, services: ServicesDep) -> RouteInfoOut:
    """How to route calls to ``username``'s chute with URL slug ``slug``."""
    async with services.store.session() as session:
        chute = await chutes_repo.get_by_route(session, username, slug)
        if chute is None or chute.status == "deleting":
            raise APIError(404, f"no chute {username}/{slug}")
        shared = await chutes_repo.shared_with(session, chute.id)
    manifest = chute.manifest
    return RouteInfoOut(
        chute_id=chute.id,
        username=chute.username,
        name=chute.name,
        slug=chute.slug,
        public=chute.public,
        shared_with=shared,
        concurrency=int(manifest.get("concurrency", 1)),
        invoke_secret=chute.invoke_secret,
        service=deploy.service_name(chute.id),
        cords=[CordSpec.model_validate(c) for c in manifest.get("cords", [])],
        max_instances=int(manifest.get("max_instances", 1)),
        host_label=chute.host_label,
    )


@router.post("/v1/internal/chutes/{chute_id}/wake", response_model=WakeOut, responses={404: {"model": ErrorOut}})
async def wake(chute_id: str, _: GatewayDep, services: ServicesDep) -> WakeOut:
    """Ask for at least one instance (scale from zero); idempotent."""
    async with services.store.session() as session:
        chute = await chutes_repo.get_chute(session, chute_id)
    if chute is None or chute.status == "deleting":
        raise APIError(404, f"no chute {chute_id}")
    before = chute.desired_instances
    chute = await deploy.wake(services, chute)
    return WakeOut(chute_id=chute.id, desired_instances=chute.desired_instances, woken=before == 0)
