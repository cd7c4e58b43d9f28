"""Metering API: usage per user, chute and day; the catalog's prices; invocation reports from gateways."""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chutes import gpus
from chutes.scheduler import metering, utilisation
from chutes.scheduler.api.deps import GatewayDep, ServicesDep, UserDep
from chutes.scheduler.api.errors import APIError, ErrorOut
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute, User

router = APIRouter(tags=["metering"], responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})

MAX_DAYS = 366
GPU_SECONDS = Decimal("0.001")
PER_SECOND = Decimal("0.0000000001")


class UsageLineOut(BaseModel):
    day: date
    user_id: str
    username: str
    chute_id: str
    chute_name: str
    invocations: int
    errors: int
    duration_ms: float
    bytes_in: int
    bytes_out: int
    gpu_seconds: Decimal
    gpu_models: list[str]
    cost_usd: Decimal
    running_instances: int = Field(
        0, description="instances still running: their GPU time is counted up to as_of and keeps growing"
    )


class UsageTotal(BaseModel):
    invocations: int
    errors: int
    gpu_seconds: Decimal
    cost_usd: Decimal
    running_instances: int = 0


class UsageOut(BaseModel):
    """Usage from ``start`` to ``end`` (UTC days, inclusive). GPU time is billed to the chute's owner; calls
    count for the caller. Each line's cost is rounded to the cent; the total is the sum of the lines."""

    start: date
    end: date
    currency: str = "USD"
    as_of: float = Field(description="UNIX time the running instances' GPU time is counted up to")
    lines: list[UsageLineOut]
    total: UsageTotal


class GPUPrice(BaseModel):
    id: str
    vram_gb: int
    hourly_usd: Decimal
    per_second_usd: Decimal
    schedulable: bool


class PricingOut(BaseModel):
    currency: str = "USD"
    billing: str = "per GPU-second from instance ready to stop, at the hourly rate of the GPU model it ran on"
    gpus: list[GPUPrice]


class InvocationsAccepted(BaseModel):
    accepted: int


@router.get("/v1/pricing", response_model=PricingOut)
async def pricing(_: UserDep) -> PricingOut:
    """The GPU catalog's prices (USD per GPU)."""
    out = []
    for gpu in sorted(gpus.CATALOG.values(), key=lambda g: (g.hourly_usd, g.id)):
        hourly = Decimal(str(gpu.hourly_usd))
        out.append(
            GPUPrice(
                id=gpu.id,
                vram_gb=gpu.vram_gb,
                hourly_usd=hourly,
                per_second_usd=(hourly / metering.SECONDS_PER_HOUR).quantize(PER_SECOND),
                schedulable=gpu.schedulable,
            )
        )
    return PricingOut(gpus=out)


@router.get("/v1/usage", response_model=UsageOut, responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
async def usage(
    principal: UserDep,
    services: ServicesDep,
    start: Annotated[date | None, Query(description="first UTC day (default: 29 days before end)")] = None,
    end: Annotated[date | None, Query(description="last UTC day, inclusive (default: today)")] = None,
    chute: Annotated[str | None, Query(description="a chute id or name of yours")] = None,
    username: Annotated[str | None, Query(description="(admin) another user's usage")] = None,
    everyone: Annotated[bool, Query(description="(admin) every user's usage")] = False,
) -> UsageOut:
    """The caller's usage per chute and day: calls made, and GPU time of their chutes with its cost."""
    now = time.time()
    last = end or metering.utc_date(now)
    first = start or last - timedelta(days=29)
    if first > last:
        raise APIError(422, f"start {first} is after end {last}", "swap them")
    if (last - first).days >= MAX_DAYS:
        raise APIError(422, f"at most {MAX_DAYS} days per report", "ask for a shorter range")
    if (username is not None or everyone) and not principal.is_admin:
        raise APIError(403, "only an admin key can see other users' usage", "drop 'username' and 'everyone'")
    async with services.store.session() as session:
        user_id: str | None = principal.user_id
        if everyone:
            user_id = None
        elif username is not None:
            user = await users_repo.get_user_by_name(session, username)
            if user is None:
                raise APIError(404, f"user {username!r} not found")
            user_id = user.id
        chute_id: str | None = None
        if chute is not None:
            found = await chutes_repo.resolve(session, principal, chute)
            if found is not None:
                chute_id = found.id
            elif _is_uuid(chute):
                chute_id = chute  # a deleted chute's id: the user filter still limits what is shown
            else:
                raise APIError(404, f"chute {chute!r} not found", "give a chute id or the name of one of yours")
        first_day, last_day = metering.epoch_day_of(first), metering.epoch_day_of(last)
        start_t = float(first_day * metering.SECONDS_PER_DAY)
        end_t = float((last_day + 1) * metering.SECONDS_PER_DAY)
        intervals = await metering.live_intervals(session, start_t, end_t, user_id, chute_id, now)
        calls = await metering.calls_for(session, first_day, last_day, user_id, chute_id)
        lines = metering.build_report(intervals, calls, first_day, last_day, now)
        await _fill_names(session, lines)
    out = [
        UsageLineOut(
            day=metering.day_of(ln.day),
            user_id=ln.user_id,
            username=ln.username,
            chute_id=ln.chute_id,
            chute_name=ln.chute_name,
            invocations=ln.invocations,
            errors=ln.errors,
            duration_ms=round(ln.duration_ms, 3),
            bytes_in=ln.bytes_in,
            bytes_out=ln.bytes_out,
            gpu_seconds=ln.gpu_seconds.quantize(GPU_SECONDS),
            gpu_models=sorted(ln.gpu_models),
            cost_usd=ln.cost,
            running_instances=ln.running,
        )
        for ln in lines
    ]
    total = UsageTotal(
        invocations=sum(ln.invocations for ln in out),
        errors=sum(ln.errors for ln in out),
        gpu_seconds=sum((ln.gpu_seconds for ln in lines), Decimal(0)).quantize(GPU_SECONDS),
        cost_usd=sum((ln.cost_usd for ln in out), Decimal("0.00")),
        running_instances=sum(ln.running_instances for ln in out),
    )
    return UsageOut(start=first, end=last, as_of=now, lines=out, total=total)


@router.post("/v1/internal/invocations", response_model=InvocationsAccepted, status_code=202)
async def report_invocations(
    body: metering.InvocationBatch, principal: GatewayDep, services: ServicesDep
) -> InvocationsAccepted:
    """(gateways) Record a batch of invocations (records already stored are ignored: retries are safe) and the
    gateway's utilisation snapshot (``chutes.scheduler.utilisation``). 403, and nothing stored, when the
    snapshot names a gateway id that another key reported lately."""
    now = time.time()
    async with services.store.session() as session:
        if body.utilisation is not None:
            max_age = services.config.autoscale_report_max_age_s
            if not await utilisation.record(session, principal.key_id, body.utilisation, now, max_age):
                raise APIError(
                    403,
                    f"gateway id {body.utilisation.gateway_id!r} is reported with another API key",
                    f"give each gateway its own id, or the same key; a silent id is free again after {max_age:g}s",
                )
        accepted = await metering.record_invocations(session, body.records, now)
    return InvocationsAccepted(accepted=accepted)


async def _fill_names(session: AsyncSession, lines: list[metering.UsageLine]) -> None:
    """Usernames of callers and names of chutes for lines that only have calls."""
    user_ids = {ln.user_id for ln in lines if not ln.username}
    chute_ids = {ln.chute_id for ln in lines if not ln.chute_name}
    names: dict[str, str] = {}
    if user_ids:
        rows = await session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
        names.update({uid: name for uid, name in rows.all()})
    chute_names: dict[str, str] = {}
    if chute_ids:
        rows = await session.execute(select(Chute.id, Chute.name).where(Chute.id.in_(chute_ids)))
        chute_names.update({cid: name for cid, name in rows.all()})
    for ln in lines:
        ln.username = ln.username or names.get(ln.user_id, "(deleted user)")
        ln.chute_name = ln.chute_name or chute_names.get(ln.chute_id, "(deleted chute)")


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
