"""Store rows as API answers (and a chute's status as its instances are now, from the cluster view)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chutes.chute.node_selector import NodeSelector
from chutes.scheduler.api.schemas import ChuteOut
from chutes.scheduler.deploy import job_id
from chutes.scheduler.instance_states import chute_status, instance_views
from chutes.scheduler.services import Services
from chutes.scheduler.store import instances as instances_repo
from chutes.scheduler.store.models import Chute


def chute_out(chute: Chute, shared_with: list[str] | None = None, placement: dict[str, Any] | None = None) -> ChuteOut:
    manifest = chute.manifest
    selector = NodeSelector.model_validate(manifest.get("node_selector") or {})
    cords = [
        {
            "name": c.get("name"),
            "public_api_path": c.get("public_api_path"),
            "public_api_method": c.get("public_api_method", "POST"),
            "stream": bool(c.get("stream")),
        }
        for c in manifest.get("cords", [])
    ]
    return ChuteOut(
        chute_id=chute.id,
        username=chute.username,
        name=chute.name,
        slug=chute.slug,
        version=chute.version,
        public=chute.public,
        status=chute.status,
        status_detail=chute.status_detail,
        desired_instances=chute.desired_instances,
        max_instances=int(manifest.get("max_instances", 1)),
        concurrency=int(manifest.get("concurrency", 1)),
        gpu_count=selector.gpu_count,
        eligible_gpus=selector.eligible_gpus,
        hourly_price_usd=selector.hourly_price_usd,
        cords=cords,
        jobs=[j.get("name", "") for j in manifest.get("jobs", [])],
        shared_with=shared_with or [],
        nomad_job_id=job_id(chute.id),
        host_label=chute.host_label,
        created_at=chute.created_at,
        updated_at=chute.updated_at,
        placement=placement,
    )


async def shown_status(services: Services, chute: Chute) -> tuple[str, str]:
    """(status, detail) a GET shows: the instances' as the view sees them now (Consul health included), else
    the stored one. Never waits on Consul or Nomad: a view that is not loaded or stale leaves the stored one."""
    return (await shown_statuses(services, [chute]))[chute.id]


async def shown_statuses(services: Services, chutes: Sequence[Chute]) -> dict[str, tuple[str, str]]:
    """``shown_status`` for many chutes at once (one read of the instance rows), so that a list shows what the
    single-chute GET shows."""
    shown = {c.id: (c.status, c.status_detail) for c in chutes}
    view = services.view
    snapshot = view.latest()
    age = view.age()
    if snapshot is None or age is None or age > view.max_age_s:
        return shown
    # Deleting chutes and chutes of jobs (no instances: their status is the deploy's) keep the stored one.
    live = [c for c in chutes if c.status != "deleting" and (c.manifest or {}).get("cords")]
    if not live:
        return shown
    async with services.store.session() as session:
        rows = await instances_repo.list_for_many(session, [c.id for c in live])
    for chute in live:
        views = instance_views(
            chute, snapshot.allocations_of(chute.id), snapshot.health, snapshot.inventories, rows.get(chute.id, [])
        )
        shown[chute.id] = chute_status(views, chute.desired_instances) or shown[chute.id]
    return shown
