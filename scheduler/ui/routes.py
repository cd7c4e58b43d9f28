"""The dashboard's own API, ``/ui/api/...``: sign-in and sign-out, and views that the plain API would need
several calls (or none of its routes) to answer. Everything else the page reads and changes through the
ordinary ``/v1`` API, authenticated by the session cookie (see ``middleware``).

Every route here takes the API's own dependencies (``UserDep``: a valid user or admin key) and its own
visibility rules (``chutes_repo.resolve``/``can_see``: another user's private chute is "not found").
The routes are left out of the OpenAPI document: they serve this page, not API clients.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from chutes.chute.node_selector import NodeSelector
from chutes.scheduler import metering
from chutes.scheduler.api import nodes as nodes_api
from chutes.scheduler.api.chutes import find_chute
from chutes.scheduler.api.deps import ServicesDep, UserDep, bearer_token, throttled_authenticate
from chutes.scheduler.api.errors import APIError
from chutes.scheduler.api.schemas import ChuteOut
from chutes.scheduler.api.views import chute_out, shown_status, shown_statuses
from chutes.scheduler.nomad_api import NomadError
from chutes.scheduler.placement import Placement, PlacementRequest, place
from chutes.scheduler.services import Services
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import instances as instances_repo
from chutes.scheduler.store.metering_models import InstanceUsage
from chutes.scheduler.store.models import Chute
from chutes.scheduler.store.secrets import API_KEY_PREFIX, looks_like_api_key
from chutes.scheduler.store.users import Principal
from chutes.scheduler.ui import proxy
from chutes.scheduler.ui.middleware import SCOPE_SESSION, clear_cookie_header, keyring_for, same_origin
from chutes.scheduler.ui.schemas import (
    ByModelOut,
    ChuteDetail,
    ChuteRow,
    CordOut,
    Features,
    GPUView,
    HolderOut,
    InstanceSummary,
    ModelUsageOut,
    NodesOut,
    NodeView,
    RunningInstance,
    RunningOut,
    SessionOut,
    SignIn,
    TryIn,
    VerdictOut,
)
from chutes.scheduler.ui.session import COOKIE
from chutes.scheduler.ui.views import gpu_holders, node_verdicts, running_cost, usage_by_model

router = APIRouter(include_in_schema=False)

# Optional APIs written by other parts of the scheduler: the dashboard shows their pages when they are served.
FEATURE_PREFIXES = {"images": "/v1/images", "secrets": "/v1/secrets"}


def route_paths(routes: Iterable[Any], prefix: str = "") -> Iterator[str]:
    """Every path an app serves. Recent FastAPI versions include a router lazily, as one route holding the
    original router (``original_router``, its prefix in ``include_context``), so its paths are found inside."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            inner = str(getattr(getattr(route, "include_context", None), "prefix", "") or "")
            yield from route_paths(getattr(included, "routes", ()), prefix + inner)
            continue
        path = getattr(route, "path", None)
        if isinstance(path, str):
            yield prefix + path


def features(request: Request, services: Services) -> Features:
    paths = list(route_paths(request.app.routes))
    found = {name: any(p.startswith(prefix) for p in paths) for name, prefix in FEATURE_PREFIXES.items()}
    return Features(gateway=bool(services.config.gateway_url), **found)


def _cookie(value: str, secure: bool) -> str:
    # No Max-Age/Expires: a session cookie, gone when the browser closes; the sealed key expires on its own.
    return f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


def _session_out(principal: Principal, csrf: str | None, expires_at: float | None, feats: Features) -> SessionOut:
    return SessionOut(
        user_id=principal.user_id,
        username=principal.username,
        is_admin=principal.is_admin,
        role=principal.role,
        csrf_token=csrf,
        expires_at=expires_at,
        features=feats,
    )


@router.post("/ui/api/session", response_model=SessionOut)
async def sign_in(body: SignIn, request: Request, response: Response, services: ServicesDep) -> SessionOut:
    """Check an API key and keep it for this browser session (HttpOnly cookie)."""
    origin = request.headers.get("origin")
    if origin is not None and not same_origin(origin, request.headers.get("host")):
        raise APIError(403, "signing in from another site is not allowed", "open the dashboard at /ui/")
    key = body.api_key.strip()
    if not key.startswith(API_KEY_PREFIX) or not looks_like_api_key(key):
        raise APIError(401, "that is not an API key: keys start with 'cnk_' and have 47 characters",
                       "copy the whole key that `chutes keys create` or your admin gave you")  # fmt: skip
    principal = await throttled_authenticate(request, services, key)  # 429 for an address guessing keys
    if principal is None:
        hint = "check that you pasted the right key, or create a new one with `chutes keys create`"
        raise APIError(401, "this API key is not valid: it is unknown or has been revoked", hint)
    if principal.role == "gateway":
        raise APIError(403, "a gateway key cannot sign in to the dashboard", "sign in with a user or admin key")
    keyring = await keyring_for(request.app)
    sealed = keyring.seal(key)
    response.headers["set-cookie"] = _cookie(sealed.cookie, request.url.scheme == "https")
    response.headers["cache-control"] = "no-store"
    return _session_out(principal, sealed.csrf, sealed.expires_at, features(request, services))


@router.get("/ui/api/session", response_model=SessionOut)
async def whoami(request: Request, response: Response, principal: UserDep, services: ServicesDep) -> SessionOut:
    """Who is signed in, the CSRF token of the session, and which pages the scheduler can show."""
    cookie: str | None = request.scope.get(SCOPE_SESSION)
    csrf = expires = None
    if cookie is not None:
        keyring = await keyring_for(request.app)
        csrf = keyring.csrf(cookie)
        opened = keyring.open(cookie)
        expires = opened[1] if opened else None
    response.headers["cache-control"] = "no-store"
    return _session_out(principal, csrf, expires, features(request, services))


@router.delete("/ui/api/session", status_code=204)
async def sign_out(request: Request) -> Response:
    """Forget the session in this browser (revoke the key itself to end every session made with it)."""
    name, value = clear_cookie_header(request.url.scheme == "https")
    return Response(status_code=204, headers={name.decode(): value.decode(), "cache-control": "no-store"})


async def _summaries(services: Services, chutes: list[Chute]) -> dict[str, InstanceSummary]:
    out = {}
    async with services.store.session() as session:
        rows = await instances_repo.list_for_many(session, [c.id for c in chutes])
    for chute in chutes:
        live = [i for i in rows.get(chute.id, []) if i.state not in instances_repo.TERMINAL]
        out[chute.id] = InstanceSummary(
            live=len(live),
            ready=sum(1 for i in live if i.state == "ready"),
            gpu_models=sorted({i.gpu_model for i in live if i.gpu_model}),
        )
    return out


@router.get("/ui/api/chutes", response_model=list[ChuteRow])
async def chutes(principal: UserDep, services: ServicesDep, all: bool = False) -> list[ChuteRow]:
    """The chutes list (yours and shared with you; ``all``: every chute, for admins) with instance counts
    from the scheduler's records (no Nomad call per chute)."""
    async with services.store.session() as session:
        found = await chutes_repo.list_visible(session, principal, everyone=all)
        owned = {c.id for c in found if await chutes_repo.manages(session, principal, c)}
        rows = [(c, await chutes_repo.shared_with(session, c.id) if c.id in owned else []) for c in found]
    summaries = await _summaries(services, found)
    shown = await shown_statuses(services, found)
    return [
        ChuteRow(**_shown(chute_out(c, shared), shown[c.id]), instances=summaries[c.id], owned=c.id in owned)
        for c, shared in rows
    ]


def _shown(out: ChuteOut, status: tuple[str, str]) -> dict[str, Any]:
    """A chute as the API shows it, with the status its instances have now (as GET /v1/chutes/{ref} does)."""
    return {**out.model_dump(), "status": status[0], "status_detail": status[1]}


@router.get("/ui/api/chute", response_model=ChuteDetail)
async def chute_detail(ref: str, principal: UserDep, services: ServicesDep) -> ChuteDetail:
    """One chute with its readme and, per cord, an example input for the form."""
    from chutes.commands.deploy import example_body  # the CLI's "first try" body, so both suggest the same

    chute = await find_chute(services, principal, ref)
    async with services.store.session() as session:
        owned = await chutes_repo.manages(session, principal, chute)
        shared = await chutes_repo.shared_with(session, chute.id) if owned else []
    summary = (await _summaries(services, [chute]))[chute.id]
    status = await shown_status(services, chute)
    manifest = chute.manifest
    cords = [
        CordOut(
            name=str(c.get("name") or ""),
            public_api_path=str(c.get("public_api_path") or ""),
            public_api_method=str(c.get("public_api_method") or "POST"),
            stream=bool(c.get("stream")),
            example=example_body(c.get("input_schema")),
            input_schema=c.get("input_schema"),
        )
        for c in manifest.get("cords") or []
    ]
    gateway = services.config.gateway_url
    return ChuteDetail(
        **_shown(chute_out(chute, shared), status),
        instances=summary,
        owned=owned,
        tagline=str(manifest.get("tagline") or ""),
        readme=str(manifest.get("readme") or ""),
        cord_forms=cords,
        invoke_url=f"{gateway}/{chute.username}/{chute.slug}" if gateway else None,
    )


@router.post("/ui/api/try")
async def try_cord(body: TryIn, request: Request, principal: UserDep, services: ServicesDep) -> Any:
    """Call one cord of a chute through the gateway, as the signed-in user; the answer streams back."""
    chute = await find_chute(services, principal, body.chute)
    gateway = services.config.gateway_url
    if not gateway:
        hint = "start the scheduler with CHUTES_GATEWAY_URL (or --gateway-url), or call the gateway directly"
        raise APIError(503, "this scheduler does not know the gateway's address, so it cannot call chutes", hint)
    cord = proxy.find_cord(chute.manifest, body.cord)
    method = str(cord.get("public_api_method") or "POST").upper()
    url = proxy.cord_url(gateway, chute.username, chute.slug, str(cord.get("public_api_path") or "/"))
    payload, query = proxy.encode_input(method, body.input)
    return await proxy.forward(gateway, bearer_token(request), method, url, payload, query)


@router.get("/ui/api/nodes", response_model=NodesOut)
async def nodes(principal: UserDep, services: ServicesDep, chute: str | None = None) -> NodesOut:
    """Every GPU node with what holds each GPU; with ``chute``, whether one more instance of it fits on each
    node and where placement would put it (the checks and reasons of a deploy)."""
    snap = await nodes_api.snapshot(services)
    try:
        holders = gpu_holders(await services.nomad.allocations(resources=True))
    except NomadError:
        holders = {}  # the inventory still says which GPUs are busy, just not for whom
    async with services.store.session() as session:
        target = None
        if chute:
            target = await chutes_repo.resolve(session, principal, chute)
            if target is None:
                raise APIError(404, f"chute {chute!r} not found", "pick one of your chutes")
        names: dict[str, str] = {}
        for chute_id in {h.chute_id for h in holders.values() if h.chute_id}:
            found = await session.get(Chute, chute_id)
            # Which instance holds a GPU is the chute owner's to know (sharing grants calling only).
            if found is not None and await chutes_repo.manages(session, principal, found):
                names[chute_id] = found.name
    verdicts: dict[str, VerdictOut] = {}
    explanation = hint = None
    if target is not None:
        selector = NodeSelector.model_validate(target.manifest.get("node_selector") or {})
        try:
            request = PlacementRequest.from_selector(target.id, selector)
        except ValueError as exc:
            explanation, hint = str(exc), "change the chute's NodeSelector"
        else:
            for v in node_verdicts(snap.nodes, request):
                verdicts[v.node_id] = VerdictOut(
                    fits=v.fits, reason=v.reason, label=v.label, hint=v.hint, gpu_model=v.gpu_model,
                    gpu_uuids=list(v.gpu_uuids),
                )  # fmt: skip
            result = place(snap.cluster, request)
            explanation = result.explanation
            hint = None if isinstance(result, Placement) else result.hint
    views = []
    for node in snap.nodes:
        out = nodes_api.node_out(node, snap.inventories[node.node_id])
        gpus = []
        for gpu in out.gpus:
            holder = holders.get(gpu.uuid)
            held = None
            if holder is not None:
                visible = holder.chute_id in names
                held = HolderOut(
                    instance_id=holder.instance_id if visible else "",
                    chute_id=holder.chute_id if visible else None,
                    chute_name=names.get(holder.chute_id or ""),
                )
            gpus.append(GPUView(**gpu.model_dump(), held_by=held))
        fields = out.model_dump(exclude={"gpus"})
        views.append(NodeView(**fields, gpus=gpus, verdict=verdicts.get(node.node_id)))
    return NodesOut(nodes=views, chute=target.name if target else None, explanation=explanation, hint=hint)


@router.get("/ui/api/usage/running", response_model=RunningOut)
async def running(principal: UserDep, services: ServicesDep, everyone: bool = False) -> RunningOut:
    """The caller's instances billed right now (admins: ``everyone``'s), with their cost so far."""
    if everyone and not principal.is_admin:
        raise APIError(403, "only an admin key can see every user's instances", "drop 'everyone'")
    now = time.time()
    query = select(InstanceUsage).where(InstanceUsage.stopped_at.is_(None)).order_by(InstanceUsage.ready_at)
    if not everyone:
        query = query.where(InstanceUsage.owner_id == principal.user_id)
    async with services.store.session() as session:
        rows = list((await session.execute(query)).scalars())
    out = []
    for u in rows:
        rate = Decimal(u.hourly_usd_per_gpu)
        out.append(
            RunningInstance(
                instance_id=u.alloc_id, chute_id=u.chute_id, chute_name=u.chute_name, username=u.owner_username,
                node_id=u.node_id, gpu_model=u.gpu_model, gpu_count=u.gpu_count, hourly_usd=rate * u.gpu_count,
                ready_at=u.ready_at, cost_usd=running_cost(u.ready_at, now, u.gpu_count, rate),
            )
        )  # fmt: skip
    return RunningOut(
        now=now,
        instances=out,
        hourly_usd=sum((i.hourly_usd for i in out), Decimal(0)),
        cost_usd=sum((i.cost_usd for i in out), Decimal(0)),
    )


@router.get("/ui/api/usage/models", response_model=ByModelOut)
async def usage_models(principal: UserDep, services: ServicesDep, days: int = 30, everyone: bool = False) -> ByModelOut:
    """GPU time and cost per GPU model over the last ``days`` UTC days (the caller's chutes; admins: all)."""
    if everyone and not principal.is_admin:
        raise APIError(403, "only an admin key can see every user's usage", "drop 'everyone'")
    if not 1 <= days <= 366:
        raise APIError(422, "days must be between 1 and 366")
    now = time.time()
    last = metering.utc_date(now)
    first = last - timedelta(days=days - 1)
    first_day, last_day = metering.epoch_day_of(first), metering.epoch_day_of(last)
    start_t = float(first_day * metering.SECONDS_PER_DAY)
    end_t = float((last_day + 1) * metering.SECONDS_PER_DAY)
    async with services.store.session() as session:
        owner = None if everyone else principal.user_id
        intervals = await metering.intervals_for(session, start_t, end_t, owner, None)
    rows = usage_by_model(intervals, first_day, last_day, now)
    return ByModelOut(
        start=first.isoformat(),
        end=last.isoformat(),
        models=[ModelUsageOut(gpu_model=r.gpu_model, gpu_seconds=r.gpu_seconds, cost_usd=r.cost_usd) for r in rows],
    )
