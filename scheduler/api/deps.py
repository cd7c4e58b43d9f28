"""Authentication and shared dependencies of the API's routers.

User endpoints take ``Authorization: Bearer <API key>``; keys with the ``gateway`` role may only call the
internal endpoints. Instance endpoints take the instance token of a chute version and refuse user keys.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from chutes.scheduler.api.errors import APIError
from chutes.scheduler.services import Services
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import ChuteVersion
from chutes.scheduler.store.secrets import API_KEY_PREFIX, INSTANCE_TOKEN_PREFIX
from chutes.scheduler.store.users import Principal

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _unauthorized(detail: str, hint: str) -> APIError:
    err = APIError(401, detail, hint)
    err.headers = dict(_CHALLENGE)
    return err


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header:
        raise _unauthorized("missing API key", "send 'Authorization: Bearer <API key>'")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("malformed Authorization header", "send 'Authorization: Bearer <API key>'")
    return token


async def any_principal(request: Request, services: Annotated[Services, Depends(get_services)]) -> Principal:
    """The caller behind a valid, unrevoked API key of any role."""
    token = bearer_token(request)
    if token.startswith(INSTANCE_TOKEN_PREFIX):
        raise _unauthorized("an instance token cannot call this endpoint", "use an API key")
    async with services.store.session() as session:
        principal = await users_repo.authenticate(session, token)
    if principal is None:
        raise _unauthorized("invalid or revoked API key", "create a new key with `chutes keys create`")
    return principal


async def current_user(principal: Annotated[Principal, Depends(any_principal)]) -> Principal:
    """A user or admin key (gateway keys are limited to the internal API)."""
    if principal.role == "gateway":
        raise APIError(403, "a gateway key may only call /v1/internal endpoints", "use a user key")
    return principal


async def require_admin(principal: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not principal.is_admin:
        raise APIError(403, "this needs an admin key", "ask an admin, or use `chutes-scheduler create-admin`")
    return principal


async def require_gateway(principal: Annotated[Principal, Depends(any_principal)]) -> Principal:
    if not principal.is_gateway:
        raise APIError(403, "this needs a gateway or admin key", "create one with role 'gateway' (admin only)")
    return principal


async def instance_version(request: Request, services: Annotated[Services, Depends(get_services)]) -> ChuteVersion:
    """The chute version whose instance token the caller presents (never a user key)."""
    token = bearer_token(request)
    if token.startswith(API_KEY_PREFIX):
        raise _unauthorized("user API keys cannot call instance endpoints", "use the instance's CHUTES_INSTANCE_TOKEN")
    async with services.store.session() as session:
        version = await chutes_repo.version_by_token(session, token)
    if version is None:
        raise _unauthorized("invalid instance token", "the chute version may have been replaced or deleted")
    return version


ServicesDep = Annotated[Services, Depends(get_services)]
UserDep = Annotated[Principal, Depends(current_user)]
AdminDep = Annotated[Principal, Depends(require_admin)]
GatewayDep = Annotated[Principal, Depends(require_gateway)]
AnyPrincipalDep = Annotated[Principal, Depends(any_principal)]
InstanceDep = Annotated[ChuteVersion, Depends(instance_version)]
