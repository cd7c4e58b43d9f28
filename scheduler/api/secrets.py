"""Secrets of chutes: create (or replace), list (names only, never values), delete.

A secret belongs to one of the caller's chutes, named by id, name or slug; a name that no chute has yet names
the caller's future chute of that name, so secrets can exist before the first deploy. Values are sealed at rest
(``secret_box``) and reach only the chute's instances, through its Nomad Variables (``secret_sync``). Nobody
reads a value back through the API. Another user's chute answers 404 (as for chutes); admins list everyone's
secret names (``?all=true``) but cannot change them.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from chutes.identity import InvalidNameError, validate_chute_name
from chutes.identity import chute_id as make_chute_id
from chutes.scheduler import secret_sync
from chutes.scheduler.api.deps import ServicesDep, UserDep
from chutes.scheduler.api.errors import APIError, ErrorOut
from chutes.scheduler.errors import UpstreamError
from chutes.scheduler.secret_box import sealed_context
from chutes.scheduler.secret_env import MAX_SECRETS, SecretInputError, validate_name, validate_value
from chutes.scheduler.services import Services
from chutes.scheduler.store import chute_secrets as secrets_repo
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store.secret_models import ChuteSecret
from chutes.scheduler.store.users import Principal

router = APIRouter(
    tags=["secrets"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)

PENDING_HINT = "the secret is stored: the scheduler applies it to the chute once Nomad answers"


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chute: str = Field(min_length=1, max_length=256, description="the chute's id, name or slug")
    name: str = Field(min_length=1, max_length=256, description="an environment variable name, e.g. HF_TOKEN")
    value: str = Field(max_length=64 * 1024, description="never shown again", repr=False)


class SecretOut(BaseModel):
    name: str
    chute_id: str
    chute_name: str
    username: str
    created_at: float
    updated_at: float


class SecretWritten(SecretOut):
    created: bool = Field(description="false when an existing secret was replaced")
    applied: bool = Field(description="the chute is deployed and its instances get the value (restarting)")


def _out(row: ChuteSecret, username: str) -> SecretOut:
    return SecretOut(name=row.name, chute_id=row.chute_id, chute_name=row.chute_name, username=username,
                     created_at=row.created_at, updated_at=row.updated_at)  # fmt: skip


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def _target(services: Services, principal: Principal, ref: str, *, reading: bool = False) -> tuple[str, str]:
    """(chute id, chute name) of the caller's chute ``ref`` names, deployed or not yet; 404/403/422 otherwise."""
    async with services.store.session() as session:
        chute = await chutes_repo.resolve(session, principal, ref)
    if chute is not None:
        # Visible but not the caller's (shared, public, or an admin looking): names at most, for admins.
        if chute.owner_id != principal.user_id and not (reading and principal.is_admin):
            raise APIError(403, f"only the owner of {chute.name!r} manages its secrets",
                           "admins see secret names only (GET /v1/secrets?all=true)")  # fmt: skip
        return chute.id, chute.name
    if _is_uuid(ref):
        raise APIError(404, f"chute {ref!r} not found", "name a chute you own by id, name or slug")
    try:
        validate_chute_name(ref)
    except InvalidNameError as exc:
        raise APIError(422, str(exc), "name one of your chutes (deployed or not yet) by its name") from None
    return make_chute_id(principal.username, ref), ref


async def _apply(services: Services, chute_id: str) -> bool:
    try:
        return await secret_sync.apply(services, chute_id)
    except UpstreamError as exc:
        exc.hint = PENDING_HINT
        raise


@router.post("/v1/secrets", response_model=SecretWritten, status_code=201, responses={200: {"model": SecretWritten}})
async def create_secret(body: SecretIn, principal: UserDep, services: ServicesDep, response: Response) -> SecretWritten:
    """Create or replace a secret of one of your chutes (201 created, 200 replaced). A deployed chute's instances
    restart with it, one at a time; a new name registers the chute's job again (its template lists the names)."""
    try:
        name = validate_name(body.name)
        value = validate_value(body.value)
    except SecretInputError as exc:
        raise APIError(422, str(exc), exc.hint) from None
    box = services.secrets
    if box is None:
        raise APIError(503, "this scheduler has no CHUTES_SECRETS_KEY, so it cannot store secrets",
                       "the operator sets CHUTES_SECRETS_KEY (`chutes-scheduler secrets-key` makes one)")  # fmt: skip
    chute_id, chute_name = await _target(services, principal, body.chute)
    async with services.store.session() as session:
        existing = await secrets_repo.names(session, chute_id)
        if name not in existing and len(existing) >= MAX_SECRETS:
            raise APIError(422, f"chute {chute_name!r} already has {len(existing)} secrets", "delete one first")
        row, created = await secrets_repo.upsert(
            session, owner_id=principal.user_id, chute_id=chute_id, chute_name=chute_name, name=name,
            sealed=box.seal(value, sealed_context(chute_id, name)), key_id=box.key_id,
        )  # fmt: skip
        out = _out(row, principal.username)
    response.status_code = 201 if created else 200
    applied = await _apply(services, chute_id)
    if applied:
        what = "added" if created else "changed"
        await services.events.record(chute_id, "secrets", f"secret {name} {what}; instances restart one at a time",
                                     data={"secret": name, "created": created})  # fmt: skip
    return SecretWritten(**out.model_dump(), created=created, applied=applied)


@router.get("/v1/secrets", response_model=list[SecretOut])
async def list_secrets(
    principal: UserDep,
    services: ServicesDep,
    chute: Annotated[str | None, Query(max_length=256, description="only this chute's (id, name or slug)")] = None,
    all: Annotated[bool, Query(description="everyone's (admins)")] = False,
) -> list[SecretOut]:
    """Your secrets' names, chutes and times; never their values. Admins: ``?all=true`` for everyone's names."""
    if all and not principal.is_admin:
        raise APIError(403, "only admins list everyone's secrets", "drop ?all=true to list yours")
    chute_id = None
    if chute is not None:
        chute_id, _ = await _target(services, principal, chute, reading=True)
    owner = None if (all or (chute is not None and principal.is_admin)) else principal.user_id
    async with services.store.session() as session:
        rows = await secrets_repo.listing(session, owner_id=owner, chute_id=chute_id)
    return [_out(row, username) for row, username in rows]


@router.delete("/v1/secrets/{name}", status_code=204)
async def delete_secret(
    name: str,
    principal: UserDep,
    services: ServicesDep,
    chute: Annotated[str, Query(min_length=1, max_length=256, description="the chute's id, name or slug")],
) -> Response:
    """Delete a secret of one of your chutes; its instances restart without it."""
    try:
        validate_name(name)
    except SecretInputError as exc:
        raise APIError(422, str(exc), exc.hint) from None
    chute_id, chute_name = await _target(services, principal, chute)
    async with services.store.session() as session:
        removed = await secrets_repo.remove(session, chute_id, name)
    if not removed:
        raise APIError(404, f"chute {chute_name!r} has no secret {name}", "list them with GET /v1/secrets")
    if await _apply(services, chute_id):
        await services.events.record(chute_id, "secrets", f"secret {name} deleted", data={"secret": name})
    return Response(status_code=204)
