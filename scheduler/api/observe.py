"""Watching a chute: its instances (Nomad allocations joined with Consul health), deployment events, logs.

Reads only: instances come from the cluster view and the instance records, never recorded here (the recorder,
run by the leader's loops and the deploy watch, is the one writer).

These routes are declared before ``chutes.py``'s ``/v1/chutes/{ref}`` so that a ref followed by one of
these suffixes reaches them. They are the owner's (and admins'): a user a chute is shared with may call it,
not read its instances' addresses, events or logs (403).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from chutes.scheduler.api.chutes import owned_chute
from chutes.scheduler.api.deps import ServicesDep, UserDep
from chutes.scheduler.api.errors import APIError, ErrorOut
from chutes.scheduler.api.schemas import EventOut, InstanceOut
from chutes.scheduler.deploy import cluster_snapshot, nomad_failure
from chutes.scheduler.events import event_dict, sse_frame
from chutes.scheduler.instance_states import InstanceView, instance_views
from chutes.scheduler.nomad_api import JobNotFound, NomadError
from chutes.scheduler.render import job_id
from chutes.scheduler.services import Services
from chutes.scheduler.store import instances as instances_repo
from chutes.scheduler.store.models import Chute


async def instances_now(services: Services, chute: Chute) -> list[InstanceView]:
    """The chute's instances as the cluster view shows them, joined with their records (no write)."""
    snapshot = await cluster_snapshot(services)
    async with services.store.session() as session:
        rows = await instances_repo.list_for(session, chute.id)
    return instance_views(chute, snapshot.allocations_of(chute.id), snapshot.health, snapshot.inventories, rows)


async def list_instances(services: Services, chute: Chute) -> list[InstanceOut]:
    """The chute's instances (allocations joined with Consul health, node and GPU model), for the API."""
    views = await instances_now(services, chute)
    return [
        InstanceOut(
            instance_id=v.alloc_id,
            chute_id=chute.id,
            version=v.version,
            node_id=v.node_id,
            nomad_node_id=v.nomad_node_id,
            gpu_model=v.gpu_model,
            gpu_count=v.gpu_count,
            gpu_uuids=list(v.gpu_uuids),
            state=v.state,
            desired_status=v.desired_status,
            client_status=v.client_status,
            healthy=v.healthy,
            address=v.address,
            port=v.port,
            created_at=v.created_at,
            message=v.message,
        )
        for v in views
    ]


async def log_lines(
    services: Services, chute: Chute, *, instance: str | None, stream: str, follow: bool
) -> AsyncIterator[tuple[str, str]]:
    """(allocation id, line) of the chute's instance logs; checks the request before anything streams."""
    if stream not in ("stdout", "stderr"):
        raise APIError(422, f"stream must be stdout or stderr, not {stream!r}")
    try:
        allocs = await services.nomad.job_allocations(job_id(chute.id))
    except JobNotFound:
        allocs = []
    except NomadError as exc:
        raise nomad_failure(exc) from None
    ids = [a["ID"] for a in sorted(allocs, key=lambda a: a.get("CreateIndex", 0))]
    if instance:
        ids = [i for i in ids if i.startswith(instance)]
        if len(ids) != 1:
            raise APIError(404, f"no single instance of {chute.name!r} matches {instance!r}", "see GET .../instances")
    elif follow:
        ids = [a["ID"] for a in allocs if a.get("ClientStatus") in ("pending", "running")][-1:] or ids[-1:]

    async def lines() -> AsyncIterator[tuple[str, str]]:
        for alloc_id in ids:
            buffer = b""
            try:
                async for chunk in services.nomad.stream_logs(alloc_id, stream=stream, follow=follow):
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for raw in complete:
                        yield alloc_id, raw.decode(errors="replace")
            except NomadError as exc:
                yield alloc_id, f"[chutes: logs unavailable: {exc}]"
            if buffer:
                yield alloc_id, buffer.decode(errors="replace")

    return lines()


router = APIRouter(tags=["chutes"], responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/v1/chutes/{ref:path}/instances", response_model=list[InstanceOut])
async def instances(ref: str, principal: UserDep, services: ServicesDep) -> list[InstanceOut]:
    """The chute's instances: Nomad allocations with their node, GPU model and Consul health."""
    chute = await owned_chute(services, principal, ref, "see its instances")
    return await list_instances(services, chute)


@router.get(
    "/v1/chutes/{ref:path}/events",
    response_model=list[EventOut],
    responses={200: {"content": {"text/event-stream": {}}, "description": "with ?follow=true: SSE"}},
)
async def events(
    ref: str,
    principal: UserDep,
    services: ServicesDep,
    follow: bool = False,
    # Event ids are 64-bit database integers: a larger cursor is a 422, not an overflow inside the database.
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> list[EventOut] | StreamingResponse:
    """Deployment events, oldest first; ``?follow=true`` streams them (and new ones) as Server-Sent Events."""
    chute = await owned_chute(services, principal, ref, "read its events")
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
    chute = await owned_chute(services, principal, ref, "read its logs")
    lines = await log_lines(services, chute, instance=instance, stream=stream, follow=follow)

    async def body() -> AsyncIterator[bytes]:
        async for alloc_id, line in lines:
            yield (json.dumps({"instance": alloc_id, "stream": stream, "line": line}) + "\n").encode()

    return StreamingResponse(body(), media_type="application/x-ndjson", headers=SSE_HEADERS)
