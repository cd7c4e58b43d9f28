"""Watching a chute: its instances (Nomad allocations joined with Consul health), deployment events, logs.

These routes are declared before ``chutes.py``'s ``/v1/chutes/{ref}`` so that a ref followed by one of
these suffixes reaches them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from chutes.scheduler import deploy
from chutes.scheduler.api.chutes import find_chute
from chutes.scheduler.api.deps import ServicesDep, UserDep
from chutes.scheduler.api.errors import ErrorOut
from chutes.scheduler.api.schemas import EventOut, InstanceOut
from chutes.scheduler.events import event_dict, sse_frame

router = APIRouter(tags=["chutes"], responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/v1/chutes/{ref:path}/instances", response_model=list[InstanceOut])
async def instances(ref: str, principal: UserDep, services: ServicesDep) -> list[InstanceOut]:
    """The chute's instances: Nomad allocations with their node, GPU model and Consul health."""
    chute = await find_chute(services, principal, ref)
    return await deploy.instances(services, chute)


@router.get(
    "/v1/chutes/{ref:path}/events",
    response_model=list[EventOut],
    responses={200: {"content": {"text/event-stream": {}}, "description": "with ?follow=true: SSE"}},
)
async def events(
    ref: str, principal: UserDep, services: ServicesDep, follow: bool = False, after: int = 0
) -> list[EventOut] | StreamingResponse:
    """Deployment events, oldest first; ``?follow=true`` streams them (and new ones) as Server-Sent Events."""
    chute = await find_chute(services, principal, ref)
    if not follow:
        return [EventOut(**event_dict(e)) for e in await services.events.list(chute.id, after)]

    async def stream() -> AsyncIterator[str]:
        yield ": following events\n\n"
        async for event in services.events.follow(chute.id, after):
            yield ": keep-alive\n\n" if event is None else sse_frame(event)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.get(
    "/v1/chutes/{ref:path}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "one JSON object per log line"}},
)
async def logs(
    ref: str,
    principal: UserDep,
    services: ServicesDep,
    follow: bool = False,
    instance: str | None = None,
    stream: str = "stdout",
) -> StreamingResponse:
    """Instance logs through Nomad's logs API: JSON lines ``{"instance", "stream", "line"}``.

    ``?instance=`` picks one allocation (an id or a unique prefix; default: every instance of the chute),
    ``?stream=stderr`` the other stream, ``?follow=true`` keeps streaming.
    """
    chute = await find_chute(services, principal, ref)
    lines = await deploy.log_lines(services, chute, instance=instance, stream=stream, follow=follow)

    async def body() -> AsyncIterator[bytes]:
        async for alloc_id, line in lines:
            yield (json.dumps({"instance": alloc_id, "stream": stream, "line": line}) + "\n").encode()

    return StreamingResponse(body(), media_type="application/x-ndjson", headers=SSE_HEADERS)
