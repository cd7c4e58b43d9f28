"""Authentication and shared dependencies of the API's routers.

User endpoints take ``Authorization: Bearer <API key>``; keys with the ``gateway`` role may only call the
internal endpoints. Instance endpoints take the instance token of a chute version and refuse user keys.
A client address whose keys or tokens keep failing the database lookup gets 429 with ``Retry-After`` before
any further lookup (``chutes.core.edge.throttle``); keys that authenticated lately still pass.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from chutes.core.edge.throttle import FailureThrottle
from chutes.scheduler.api.errors import APIError
from chutes.scheduler.services import Services
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import jobs as jobs_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import ChuteVersion, JobRun
from chutes.scheduler.store.secrets import (
    INSTANCE_TOKEN_PREFIX,
    RUN_TOKEN_PREFIX,
    is_run_token,
    looks_like_api_key,
    token_secret,
)
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


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _gate(request: Request, token: str) -> FailureThrottle:
    """The app's failure throttle, after refusing a throttled client with 429 (no lookup made)."""
    throttle: FailureThrottle = request.app.state.auth_throttle
    wait = throttle.gate(_client(request), token)
    if wait is not None:
        err = APIError(429, "too many failed authentications from this address", "check the key; retry later")
        err.headers = {"Retry-After": str(wait)}
        raise err
    return throttle


async def throttled_authenticate(request: Request, services: Services, key: str) -> Principal | None:
    """The principal of API key ``key`` (None: unknown or revoked), looked up through the failure throttle.

    429 before any lookup when the client's address is throttled and the key is not one known to be valid;
    a failure is counted against the address. Every place that checks a key a client sent uses this (the
    API's dependencies and the dashboard's sign-in).
    """
    throttle = _gate(request, key)
    async with services.store.session() as session:
        principal = await users_repo.authenticate(session, key)
    if principal is None:
        throttle.failed(_client(request))
        throttle.rejected(key)
        return None
    throttle.accepted(key, _client(request))
    return principal


async def any_principal(request: Request, services: Annotated[Services, Depends(get_services)]) -> Principal:
    """The caller behind a valid, unrevoked API key of any role."""
    token = bearer_token(request)
    if token.startswith((INSTANCE_TOKEN_PREFIX, RUN_TOKEN_PREFIX)):
        raise _unauthorized("an instance or job-run token cannot call this endpoint", "use an API key")
    if not looks_like_api_key(token):  # refused without a lookup: it cannot be a key
        raise _unauthorized("invalid API key", "API keys look like cnk_ and 43 more characters")
    principal = await throttled_authenticate(request, services, token)
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
    if not token.startswith(INSTANCE_TOKEN_PREFIX):
        raise _unauthorized("only an instance token can call this endpoint", "use the instance's CHUTES_INSTANCE_TOKEN")
    throttle = _gate(request, token)
    async with services.store.session() as session:
        version = await chutes_repo.version_by_token(session, token)
    if version is None:
        throttle.failed(_client(request))
        raise _unauthorized("invalid instance token", "the chute version may have been replaced or deleted")
    throttle.accepted(token, _client(request))
    return version


async def run_credential(request: Request, services: Services, run_id: str) -> JobRun:
    """The job run whose own token the caller presents, while the run has not finished.

    401 for any other credential (a user key, an instance token, another run's token, an unknown run: the
    same answer, so run ids cannot be probed); 403 once the run has finished (its outputs are final).
    """
    token = bearer_token(request)
    if not token.startswith(RUN_TOKEN_PREFIX):
        raise _unauthorized("only the run's own token can upload its outputs", "use the run's CHUTES_RUN_TOKEN")
    throttle = _gate(request, token)
    async with services.store.session() as session:
        secret = await token_secret(session)
        run = await jobs_repo.get_run(session, run_id)
    if run is None or not is_run_token(secret, run_id, token):
        throttle.failed(_client(request))
        raise _unauthorized("invalid job-run token", "each run has its own CHUTES_RUN_TOKEN")
    throttle.accepted(token, _client(request))
    if run.status in jobs_repo.FINAL:
        raise APIError(
            403, f"job run {run_id} has finished ({run.status}): its token no longer works and its outputs "
            "cannot change", "a run uploads its outputs once, when it ends",
        )  # fmt: skip
    return run


ServicesDep = Annotated[Services, Depends(get_services)]
UserDep = Annotated[Principal, Depends(current_user)]
AdminDep = Annotated[Principal, Depends(require_admin)]
GatewayDep = Annotated[Principal, Depends(require_gateway)]
AnyPrincipalDep = Annotated[Principal, Depends(any_principal)]
InstanceDep = Annotated[ChuteVersion, Depends(instance_version)]
