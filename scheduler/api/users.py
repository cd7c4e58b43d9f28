"""Users and API keys: who am I, create users (admin), create/list/revoke keys."""

from __future__ import annotations

from fastapi import APIRouter, Response

from chutes.identity import InvalidNameError
from chutes.scheduler.api.deps import AdminDep, AnyPrincipalDep, ServicesDep, UserDep
from chutes.scheduler.api.errors import APIError, ErrorOut
from chutes.scheduler.api.schemas import KeyCreate, KeyCreated, KeyOut, Me, UserCreate, UserCreated
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import ApiKey

router = APIRouter(tags=["users"], responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})


def _key_out(key: ApiKey) -> KeyOut:
    return KeyOut(
        key_id=key.id, name=key.name, prefix=key.prefix, role=key.role, created_at=key.created_at,
        revoked_at=key.revoked_at,
    )  # fmt: skip


@router.get("/v1/me", response_model=Me)
async def me(principal: AnyPrincipalDep) -> Me:
    """The caller."""
    return Me(user_id=principal.user_id, username=principal.username, is_admin=principal.is_admin)


@router.post("/v1/users", response_model=UserCreated, status_code=201, responses={409: {"model": ErrorOut}})
async def create_user(body: UserCreate, _: AdminDep, services: ServicesDep) -> UserCreated:
    """(admin) Create a user and its first API key (shown only in this answer)."""
    async with services.store.session() as session:
        try:
            user = await users_repo.create_user(session, body.username, is_admin=body.is_admin)
        except InvalidNameError as exc:
            raise APIError(422, str(exc), "choose another username") from None
        except users_repo.UserExistsError as exc:
            raise APIError(409, str(exc), "choose another username") from None
        key, plaintext = await users_repo.create_key(session, user, name="default")
    return UserCreated(
        user_id=user.id, username=user.username, is_admin=user.is_admin, api_key=plaintext, key_id=key.id
    )


@router.post("/v1/keys", response_model=KeyCreated, status_code=201)
async def create_key(body: KeyCreate, principal: UserDep, services: ServicesDep) -> KeyCreated:
    """Create an API key for the caller; the secret is shown only in this answer."""
    async with services.store.session() as session:
        user = await users_repo.get_user(session, principal.user_id)
        if user is None:
            raise APIError(401, "the key's user no longer exists")
        if body.role != "user" and not principal.is_admin:
            raise APIError(403, f"only an admin key can create a key with role {body.role!r}")
        try:
            key, plaintext = await users_repo.create_key(session, user, name=body.name, role=body.role)
        except users_repo.RoleError as exc:
            raise APIError(422, str(exc)) from None
    return KeyCreated(**_key_out(key).model_dump(), api_key=plaintext)


@router.get("/v1/keys", response_model=list[KeyOut])
async def list_keys(principal: UserDep, services: ServicesDep) -> list[KeyOut]:
    """The caller's keys, without their secrets."""
    async with services.store.session() as session:
        return [_key_out(k) for k in await users_repo.list_keys(session, principal.user_id)]


@router.delete("/v1/keys/{key_id}", status_code=204, responses={404: {"model": ErrorOut}})
async def revoke_key(key_id: str, principal: UserDep, services: ServicesDep) -> Response:
    """Revoke one of the caller's keys (idempotent)."""
    async with services.store.session() as session:
        key = await users_repo.revoke_key(session, principal.user_id, key_id)
        if key is None:
            raise APIError(404, "key not found", "list your keys with GET /v1/keys")
    await services.announce_change(keys=[key.key_hash])
    return Response(status_code=204)
