"""The deploy flow (after ``api.uploads`` validated the upload): check placement, persist the intent, register
the Nomad job, watch it; and the changes that follow a deploy: scale, wake, delete.

Order matters for crash safety: the chute row and its version are stored (status ``deploying``) before the job
is registered, and the job's id is deterministic (``chute-<chute_id>``), so a scheduler killed anywhere in
between converges on restart: the reconciler registers a job that is missing or runs an older version, and
registering the same job twice only updates it. Progress (placed → running → ready) is recorded as events
by the ``recorder`` from the cluster view, which both the deploy watch and the reconciler call; each
transition is announced once.

Unschedulable deploys are refused (409) with the placement's explanation and nothing changes; a redeploy
that cannot be placed leaves the running version alone and records an ``unschedulable`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError

from chutes.identity import host_label, slugify
from chutes.manifest import Manifest
from chutes.scheduler import drift, render, reservations, secret_sync
from chutes.scheduler.api.uploads import Upload
from chutes.scheduler.cluster_view import ViewSnapshot, placement_cluster
from chutes.scheduler.errors import Conflict, Invalid, NotFound, UpstreamError
from chutes.scheduler.inventory_reader import InventoryUnavailable
from chutes.scheduler.nomad_api import (
    JobNotFound,
    NomadError,
    NomadRejected,
    NomadUnavailable,
    scaling_blocked,
)
from chutes.scheduler.placement import Placement, PlacementRequest, Unschedulable, place_many
from chutes.scheduler.render import ChuteRelease, RenderError, RenderSettings, batch_job_id, job_id, service_name
from chutes.scheduler.services import Services
from chutes.scheduler.store import chute_secrets as secrets_repo
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import events as events_repo
from chutes.scheduler.store import instances as instances_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.instances import TERMINAL
from chutes.scheduler.store.models import Chute
from chutes.scheduler.store.secrets import instance_token, new_invoke_secret, token_secret
from chutes.scheduler.store.users import Principal

__all__ = ["batch_job_id", "delete", "deploy", "job_id", "scale", "service_name", "submit", "wake"]

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------- Nomad and Consul


def nomad_failure(exc: NomadError) -> UpstreamError:
    """A Nomad error as an API error: 503 when it cannot be reached, 502 when it refused."""
    return UpstreamError("Nomad", str(exc), unreachable=isinstance(exc, NomadUnavailable), hint=exc.hint or None)


def render_settings(services: Services) -> RenderSettings:
    config = services.config
    return RenderSettings(
        scheduler_url=services.public_url,
        datacenters=config.datacenters,
        driver=config.task_driver,
        runtime_command=(config.runtime_python or sys.executable, "-m", "chutes.runtime"),
        container_scheduler_url=config.container_url(services.public_url),
        region=config.nomad_region,
        namespace=config.nomad_namespace,
        check_interval_s=config.check_interval_s,
        check_timeout_s=min(2, config.check_interval_s),
        healthy_deadline_s=config.healthy_deadline_s,
    )


async def release_for(services: Services, chute: Chute, placements: Sequence[Placement] = ()) -> ChuteRelease:
    async with services.store.session() as session:
        names = await secrets_repo.names(session, chute.id)
    release = ChuteRelease(
        bundle_sha256=chute.version, count=chute.desired_instances, secret_names=names, image_ref=chute.image_ref
    )
    return release.with_placements(placements)


def rendered_jobs(manifest: Manifest, release: ChuteRelease, settings: RenderSettings) -> list[dict[str, Any]]:
    """Every Nomad job of a chute: the service job (a chute with cords) or one batch job per job method,
    stamped with the digest of its rendered form (``drift``)."""
    if manifest.cords:
        return [drift.stamp(render.render_chute_job(manifest, release, settings))]
    return [drift.stamp(render.render_batch_job(manifest, spec.name, release, settings)) for spec in manifest.jobs]


async def expected_specs(services: Services, chute: Chute) -> dict[str, str]:
    """Job id → the digest of each of the chute's jobs as this scheduler would render them now."""
    manifest = Manifest.model_validate(chute.manifest)
    release = await release_for(services, chute)
    jobs = rendered_jobs(manifest, release, render_settings(services))
    return {job["ID"]: job["Meta"][drift.SPEC_META] for job in jobs}


def nomad_job_ids(manifest: Manifest) -> list[str]:
    if manifest.cords:
        return [job_id(manifest.chute_id)]
    return [batch_job_id(manifest.chute_id, spec.name) for spec in manifest.jobs]


async def submit(services: Services, chute: Chute, placements: Sequence[Placement] = ()) -> None:
    """Render and register the chute's Nomad jobs for its current version and desired count (idempotent).

    The jobs' Nomad Variables (secrets, instance tokens, invoke secret) are written first: a task's template
    waits for its variable, and no credential is ever part of a job."""
    manifest = Manifest.model_validate(chute.manifest)
    release = await release_for(services, chute, placements)
    try:
        jobs = rendered_jobs(manifest, release, render_settings(services))
    except RenderError as exc:
        raise Invalid(f"the chute cannot be turned into a Nomad job: {exc}") from None
    await secret_sync.write_variables(services, chute, manifest)
    try:
        for job in jobs:
            await services.nomad.register_job(job)
    except NomadError as exc:
        raise nomad_failure(exc) from None


# -------------------------------------------------------------------------------------------- placement


async def cluster_snapshot(services: Services) -> ViewSnapshot:
    """The cluster as the kept-current view shows it (read once, here, when the view is stale or not loaded)."""
    try:
        return await services.view.current()
    except InventoryUnavailable as exc:
        raise UpstreamError("inventory", str(exc), unreachable=True, hint="check Consul and Nomad") from None


def placement_json(placement: Placement) -> dict[str, Any]:
    return {
        "node_id": placement.node_id,
        "nomad_node_id": placement.nomad_node_id,
        "gpu_model": placement.model,
        "gpu_count": placement.gpu_count,
        "price_per_gpu": placement.price_per_gpu,
        "explanation": placement.explanation,
    }


def unschedulable_json(result: Unschedulable) -> dict[str, Any]:
    return {"explanation": result.explanation, "hint": result.hint, "nodes_total": result.nodes_total,
            "rejections": result.counts()}  # fmt: skip


async def plan(
    services: Services,
    manifest: Manifest,
    count: int,
    *,
    exclude_chute: str | None = None,
    purpose: str = "deploy",
) -> tuple[list[Placement], Unschedulable | None]:
    """Where ``count`` instances would go now (all or some), and why the rest could not be placed.

    The cluster is the kept-current view's (``cluster_view``), not a read per deploy. GPUs reserved by other
    decisions that Nomad has not placed yet count as taken (``reservations``).
    """
    request = PlacementRequest.from_selector(manifest.chute_id, manifest.node_selector)
    snapshot = await cluster_snapshot(services)
    async with services.store.session() as session:
        held = await reservations.active(session, time.time())
    services.metrics.reservations.set(sum(r.gpu_count for r in held))
    cluster = placement_cluster(snapshot, exclude_chute=exclude_chute, reserved=held)
    result = place_many(cluster, request, max(count, 1))
    failure = result.unschedulable
    services.metrics.placement(purpose, max(count, 1), len(result.placements), failure.counts() if failure else None)
    return list(result.placements), failure


async def plan_and_reserve(
    services: Services,
    manifest: Manifest,
    count: int,
    *,
    exclude_chute: str | None = None,
    purpose: str = "deploy",
) -> tuple[list[Placement], Unschedulable | None, list[str]]:
    """``plan``, and reserve the GPUs it found, as one step no other placement decision can interleave with.

    Returns the placements, why the rest failed, and the reservation ids (release them if the caller gives
    up before Nomad has the job).
    """
    async with services.store.lock(reservations.LOCK_NAME):
        placements, failure = await plan(services, manifest, count, exclude_chute=exclude_chute, purpose=purpose)
        ids: list[str] = []
        if placements:
            async with services.store.session() as session:
                ids = await reservations.reserve(session, placements, services.config.reservation_ttl_s)
    return placements, failure, ids


async def release_reservations(services: Services, *, chute_id: str | None = None, ids: Sequence[str] = ()) -> None:
    """Give reserved GPUs back (a deploy that failed, a chute deleted); best effort, they expire anyway."""
    try:
        async with services.store.session() as session:
            await reservations.release(session, chute_id=chute_id, ids=ids)
    except Exception as exc:
        log.warning("releasing GPU reservations failed (they expire on their own): %r", exc)


# -------------------------------------------------------------------------------------------- the deploy


async def deploy(services: Services, principal: Principal, upload: Upload) -> tuple[Chute, dict[str, Any] | None]:
    """Deploy (or redeploy) a validated upload; see the module docstring for the order of steps."""
    manifest = upload.manifest
    cid = manifest.chute_id
    slug = slugify(manifest.name)
    label = host_label(manifest.username, slug)
    async with services.store.session() as session:
        owner = await users_repo.get_user_by_name(session, manifest.username)
        if owner is None:
            raise Invalid(f"user {manifest.username!r} does not exist", "create the user first (admin)")
        existing = await chutes_repo.get_chute(session, cid)
        clash = await chutes_repo.get_by_route(session, manifest.username, slug)
        holder = await chutes_repo.get_by_host_label(session, label) if label else None
    if clash is not None and clash.id != cid:
        raise Conflict(f"the URL slug {slug!r} is taken by your chute {clash.name!r}", "rename one of them")
    if existing is None and holder is not None and holder.id != cid:
        # '<username>-<slug>' splits more than one way ('acme' + 'research-chat', 'acme-research' + 'chat'):
        # a second chute with the same label would make its wildcard host address name two chutes.
        raise Conflict(
            f"the host address label {label!r} (https://{label}.<domain>) already belongs to another chute: "
            f"'{manifest.username}' + '-' + '{slug}' reads the same as another user's name and chute",
            "choose another chute name (its URL slug makes the label); your path address would be unaffected",
        )
    if existing is not None and existing.status == "deleting":
        raise Conflict(f"chute {manifest.name!r} is being deleted", "retry in a few seconds")
    # Values that reach the Nomad job are checked before anything is stored.
    try:
        release = ChuteRelease(bundle_sha256=upload.sha256, image_ref=upload.image_ref)
        rendered_jobs(manifest, release, render_settings(services))
    except RenderError as exc:
        raise Invalid(f"the chute cannot be turned into a Nomad job: {exc}") from None

    is_service = bool(manifest.cords)
    count = max(existing.desired_instances, 1) if (existing is not None and is_service) else 1
    count = min(count, manifest.max_instances)
    placements, failure, held = await plan_and_reserve(
        services, manifest, count, exclude_chute=cid if existing else None
    )
    if not placements:
        assert failure is not None
        services.metrics.deploys.labels("unschedulable").inc()
        detail = f"no node can run {manifest.name!r} now: {failure.explanation}"
        if existing is not None:
            await services.events.record(
                cid, "unschedulable", detail, version=upload.sha256, data=unschedulable_json(failure)
            )
        raise Conflict(detail, failure.hint, extra={"unschedulable": unschedulable_json(failure)})

    try:
        chute = await _store_intent(services, owner.id, upload, slug, count if is_service else 0, existing is not None)
    except IntegrityError:
        await release_reservations(services, ids=held)
        services.metrics.deploys.labels("conflict").inc()
        raise Conflict(f"another deploy of {manifest.name!r} (or of a chute with its URL slug or host address "
                       "label) is under way", "retry in a moment") from None  # fmt: skip
    except BaseException:
        await release_reservations(services, ids=held)
        raise
    services.events.announce()
    await services.announce_change(routes=[(manifest.username, slug)])  # a new chute, or new cords
    if failure is not None:
        await services.events.record(
            cid, "unschedulable", f"only {len(placements)} of {count} instances fit now: {failure.explanation}",
            version=upload.sha256, data=unschedulable_json(failure),
        )  # fmt: skip

    if services.config.deploy_register_delay_s:
        await asyncio.sleep(services.config.deploy_register_delay_s)  # crash tests kill the scheduler here
    try:
        await submit(services, chute, placements)
    except UpstreamError as exc:
        # Stored, not placed: the reconciler registers it later and places it anew, so the promise goes.
        await release_reservations(services, ids=held)
        services.metrics.deploys.labels("error").inc()
        await services.events.record(cid, "error", f"registering the job failed: {exc.detail}", version=upload.sha256)
        exc.hint = "the deploy is stored: the scheduler registers it once Nomad answers (follow the events)"
        raise
    where = "; ".join(p.explanation for p in placements)
    await services.events.record(
        cid, "registered", f"registered Nomad job(s) {', '.join(nomad_job_ids(manifest))}; planned: {where}",
        version=upload.sha256,
        data={"jobs": nomad_job_ids(manifest), "planned": [placement_json(p) for p in placements]},
    )  # fmt: skip
    async with services.store.session() as session:
        row = await chutes_repo.get_chute(session, cid)
        if row is not None and row.version == upload.sha256 and row.status == "deploying":
            row.status = "registered" if is_service else "ready"
        chute = row or chute
    if is_service:
        start_watch(services, cid, upload.sha256)
    services.metrics.deploys.labels("accepted").inc()
    return chute, placement_json(placements[0])


async def _store_intent(
    services: Services, owner_id: str, upload: Upload, slug: str, desired: int, redeploy: bool
) -> Chute:
    """Persist the deploy (chute row, version, "accepted" event) in one transaction, before Nomad hears of it."""
    manifest = upload.manifest
    cid = manifest.chute_id
    async with services.store.session() as session:
        secret = await token_secret(session)
        chute = await chutes_repo.get_chute(session, cid)
        label = host_label(manifest.username, slug)
        if chute is None:
            chute = Chute(
                id=cid, owner_id=owner_id, username=manifest.username, name=manifest.name, slug=slug,
                manifest={}, version=upload.sha256, invoke_secret=new_invoke_secret(), host_label=label,
            )  # fmt: skip
            session.add(chute)
        elif (
            chute.host_label is None
            and label is not None
            and await chutes_repo.get_by_host_label(session, label) is None
        ):
            # A chute without a host address (its label was taken when it was created) gets one once it is free.
            chute.host_label = label
        chute.manifest = manifest.model_dump(mode="json")
        chute.version = upload.sha256
        chute.desired_instances = desired
        chute.image_ref = upload.image_ref
        chute.status = "deploying"
        chute.status_detail = ""
        await chutes_repo.put_version(
            session, cid, upload.sha256, upload.bundle, chute.manifest, instance_token(secret, cid, upload.sha256)
        )
        await session.flush()
        await chutes_repo.prune_versions(session, cid, services.config.bundle_versions_kept, upload.sha256)
        await events_repo.add_event(
            session, cid, "accepted",
            f"accepted version {upload.sha256[:12]} of {manifest.name!r} ({upload.meta.entrypoint})",
            version=upload.sha256, data={"entrypoint": upload.meta.entrypoint, "redeploy": redeploy},
        )  # fmt: skip
    return chute


# -------------------------------------------------------------------------------------------- after the deploy


_watches: dict[str, asyncio.Task[None]] = {}


def start_watch(services: Services, chute_id: str, version: str) -> None:
    """Watch the new version's instances for a while, recording placed → running → ready as they happen."""
    if services.config.deploy_watch_s <= 0:
        return
    previous = _watches.pop(chute_id, None)
    if previous is not None:
        previous.cancel()
    task = asyncio.create_task(_watch(services, chute_id, version), name=f"deploy-watch:{chute_id}")
    _watches[chute_id] = task
    task.add_done_callback(lambda t: _watches.pop(chute_id, None) if _watches.get(chute_id) is t else None)


async def _watch(services: Services, chute_id: str, version: str) -> None:
    from chutes.scheduler import recorder  # imports runs, which imports this module

    loop = asyncio.get_running_loop()
    deadline = loop.time() + services.config.deploy_watch_s
    waiting_told: tuple[str, int] | None = None
    while loop.time() < deadline:
        try:
            async with services.store.session() as session:
                chute = await chutes_repo.get_chute(session, chute_id)
            if chute is None or chute.version != version or chute.status == "deleting":
                return
            views = await recorder.record_chute(services, chute, await services.view.current())
            await report_rollout(services, chute)
            ready = sum(1 for v in views if v.state == "ready")
            if chute.desired_instances and ready >= chute.desired_instances:
                return
            placed = sum(1 for v in views if v.state not in TERMINAL)
            if placed < chute.desired_instances:
                waiting_told = await _tell_waiting(services, chute, placed, waiting_told)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the reconciler catches up; keep watching
            log.warning("deploy watch of %s: %r", chute_id, exc)
        await asyncio.sleep(services.config.watch_interval_s)


async def _tell_waiting(
    services: Services, chute: Chute, placed: int, told: tuple[str, int] | None
) -> tuple[str, int] | None:
    """Fewer instances placed than wanted and Nomad holds the rest in a blocked evaluation: say once (per
    blocked evaluation and shortfall) that the deploy waits for capacity; Nomad places them when a GPU frees."""
    try:
        evaluations = await services.nomad.job_evaluations(job_id(chute.id))
    except JobNotFound:
        return told
    blocked = [e for e in evaluations if e.status == "blocked"]
    if not blocked:
        return told
    key = (blocked[-1].id, chute.desired_instances - placed)
    if told == key:
        return told
    missing = chute.desired_instances - placed
    reason = blocked[-1].explanation() or "no room now"
    await services.events.record(
        chute.id, "waiting",
        f"waiting for capacity: {placed} of {chute.desired_instances} instance(s) placed; Nomad places the other "
        f"{missing} as soon as a node has room ({reason})",
        version=chute.version, data={"placed": placed, "desired": chute.desired_instances, "nomad": reason,
                                     "blocked_evaluation": blocked[-1].id},
    )  # fmt: skip
    return key


_pending_scales: dict[str, asyncio.Task[None]] = {}


def _scale_after_rollout(services: Services, chute_id: str) -> None:
    """Apply the stored desired count once the chute's rollout ends (one waiter per chute)."""
    if chute_id in _pending_scales:
        return
    task = asyncio.create_task(_apply_count_after_rollout(services, chute_id), name=f"scale-after-rollout:{chute_id}")
    _pending_scales[chute_id] = task
    task.add_done_callback(lambda _: _pending_scales.pop(chute_id, None))


async def _apply_count_after_rollout(services: Services, chute_id: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(services.config.deploy_watch_s, 60.0)
    while loop.time() < deadline:
        await asyncio.sleep(services.config.watch_interval_s)
        try:
            async with services.store.session() as session:
                chute = await chutes_repo.get_chute(session, chute_id)
            if chute is None or chute.status == "deleting":
                return
            job = await services.nomad.find_job(job_id(chute_id)) or {}
            counts = [g.get("Count") for g in job.get("TaskGroups") or [] if g.get("Name") == render.GROUP]
            if not counts or counts[0] == chute.desired_instances:
                return
            await services.nomad.scale_job(
                job_id(chute_id), chute.desired_instances, message="chutes: the count asked for during a rollout"
            )
            log.info("scaled %s to %d after its rollout", chute_id, chute.desired_instances)
            return
        except NomadRejected as exc:
            if not scaling_blocked(exc):
                log.warning("scaling %s after its rollout: %s (the reconciler retries)", chute_id, exc.detail)
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the reconciler catches up
            log.warning("scaling %s after its rollout: %r (the reconciler retries)", chute_id, exc)
            return


_rollouts_reported: set[str] = set()


async def report_rollout(services: Services, chute: Chute) -> None:
    """A Nomad deployment of the chute's current version that failed is told once, as a ``failed`` event:
    Nomad stopped replacing instances, so those of the previous version that it had not replaced yet keep
    serving (the job keeps the new version: the reconciler does not register it again)."""
    try:
        deployment = await services.nomad.latest_deployment(job_id(chute.id))
        if deployment is None or deployment.get("Status") != "failed" or deployment["ID"] in _rollouts_reported:
            return
        job = await services.nomad.find_job(job_id(chute.id))
    except (JobNotFound, NomadError) as exc:
        log.debug("rollout of %s: %r", chute.id, exc)
        return
    if job is None or job.get("Version") != deployment.get("JobVersion"):
        return
    if (job.get("Meta") or {}).get("chute_version") != render.chute_version(chute.version):
        return
    _rollouts_reported.add(deployment["ID"])
    async with services.store.session() as session:
        last = await events_repo.last_event(session, chute.id, "failed")
        if last is not None and (last.data or {}).get("deployment") == deployment["ID"]:
            return  # told by this or another scheduler before
        serving = [i for i in await instances_repo.list_for(session, chute.id) if i.state == "ready"]
    description = deployment.get("StatusDescription") or "failed"
    await services.events.record(
        chute.id, "failed",
        f"the rollout of version {chute.version[:12]} failed (Nomad: {description}); instances not replaced yet "
        f"keep serving the previous version ({len(serving)} ready); deploy a fixed version to continue",
        version=chute.version, data={"deployment": deployment["ID"], "nomad": description,
                                     "serving": len(serving)},
    )  # fmt: skip


async def stop_watches() -> None:
    tasks = list(_watches.values()) + list(_pending_scales.values())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def set_desired(services: Services, chute: Chute, count: int, reason: str) -> Chute:
    """Store the desired count, then apply it to the Nomad job (scale, or register when the job is missing)."""
    async with services.store.session() as session:
        row = await chutes_repo.get_chute(session, chute.id)
        if row is None:
            raise NotFound(f"chute {chute.name!r} not found")
        before = row.desired_instances
        row.desired_instances = count
        chute = row
    if before != count:
        await services.events.record(
            chute.id, "scaled", f"desired instances {before} → {count} ({reason})", version=chute.version,
            data={"from": before, "to": count, "reason": reason},
        )  # fmt: skip
    try:
        await services.nomad.scale_job(job_id(chute.id), count, message=f"chutes: {reason}")
    except JobNotFound:
        placements: list[Placement] = []
        if count:
            placements, _ = await plan(services, Manifest.model_validate(chute.manifest), count, purpose="scale")
        await submit(services, chute, placements)
    except NomadRejected as exc:
        if not scaling_blocked(exc):
            raise nomad_failure(exc) from None
        # Nomad refuses to scale while a rollout is under way. Registering the job again with the new count
        # would be a new version that restarts the rollout (and, rendered anew, may replace healthy instances):
        # the count is stored and applied as soon as the rollout ends (the reconciler would, at its next pass).
        log.info("scaling %s to %d waits for its rollout to end", chute.id, count)
        _scale_after_rollout(services, chute.id)
    except NomadError as exc:
        raise nomad_failure(exc) from None
    if count:
        start_watch(services, chute.id, chute.version)
    return chute


async def scale(services: Services, chute: Chute, count: int) -> Chute:
    """Set the number of instances (0 … max_instances); more instances must fit somewhere now (409 if none can)."""
    manifest = Manifest.model_validate(chute.manifest)
    if not manifest.cords:
        raise Conflict(f"{chute.name!r} runs jobs, not instances", "dispatch its jobs with POST /v1/jobs/...")
    if count > manifest.max_instances:
        raise Invalid(
            f"{count} instances is over the chute's max_instances ({manifest.max_instances})",
            "raise max_instances in the Chute and deploy again",
        )
    if chute.status == "deleting":
        raise Conflict(f"chute {chute.name!r} is being deleted")
    held: list[str] = []
    if count > chute.desired_instances:
        extra = count - chute.desired_instances
        placements, failure, held = await plan_and_reserve(services, manifest, extra, purpose="scale")
        if not placements:
            assert failure is not None
            detail = f"no node can run another instance of {chute.name!r} now: {failure.explanation}"
            raise Conflict(detail, failure.hint, extra={"unschedulable": unschedulable_json(failure)})
    try:
        return await set_desired(services, chute, count, "scale request")
    except BaseException:
        await release_reservations(services, ids=held)
        raise


async def wake(services: Services, chute: Chute) -> Chute:
    """At least one instance (scale from zero); a no-op when the chute already wants some."""
    if chute.desired_instances >= 1 or not Manifest.model_validate(chute.manifest).cords:
        return chute
    return await set_desired(services, chute, 1, "woken by a request")


async def purge_nomad(services: Services, chute_id: str, manifest: Manifest | None) -> None:
    """Deregister (purge) every Nomad job of the chute: the service job, its batch jobs and their dispatches."""
    ids = set(nomad_job_ids(manifest)) if manifest is not None else {job_id(chute_id)}
    try:
        for stub in await services.nomad.list_jobs(f"{job_id(chute_id)}"):
            if stub.get("ID", "").startswith(job_id(chute_id)):
                ids.add(stub["ID"])
        for jid in sorted(ids, key=len, reverse=True):  # dispatched children first
            with contextlib.suppress(JobNotFound):
                await services.nomad.deregister_job(jid, purge=True)
    except NomadError as exc:
        raise nomad_failure(exc) from None
    await secret_sync.delete_variables(services, chute_id)


async def wait_gone(services: Services, chute_id: str, within_s: float) -> bool:
    """Wait until no allocation of the chute runs and Consul lists no instance; deregister leftovers at the end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    name = service_name(chute_id)
    while True:
        running = [
            a for a in await services.nomad.allocations(filter_=f'JobID == "{job_id(chute_id)}"', resources=False)
            if a.get("ClientStatus") in ("pending", "running")
        ]  # fmt: skip
        _, entries = await services.consul.health.service(name)
        if not running and not entries:
            return True
        if loop.time() >= deadline:
            for entry in entries:  # Nomad should have done it; make sure the gateway stops routing there
                service_id = (entry.get("Service") or {}).get("ID")
                if service_id:
                    try:
                        await services.consul.agent.service.deregister(service_id)
                    except Exception as exc:
                        log.warning("deregistering %s from Consul failed: %r", service_id, exc)
            return False
        await asyncio.sleep(0.2)


async def delete(services: Services, chute: Chute) -> None:
    """Delete a chute: mark it, purge its Nomad jobs, wait for its instances to go, forget it (idempotent)."""
    async with services.store.session() as session:
        row = await chutes_repo.get_chute(session, chute.id)
        if row is None:
            return
        row.status = "deleting"
    await services.announce_change(routes=[(chute.username, chute.slug)])  # its route answers 404 from now on
    await release_reservations(services, chute_id=chute.id)
    watch = _watches.pop(chute.id, None)
    if watch is not None:
        watch.cancel()
    await services.events.record(chute.id, "deleting", f"deleting {chute.name!r}", version=chute.version)
    manifest = Manifest.model_validate(chute.manifest)
    try:
        await purge_nomad(services, chute.id, manifest)
    except UpstreamError as exc:
        exc.hint = "the chute is marked for deletion: the scheduler finishes it once Nomad answers"
        raise
    try:
        await wait_gone(services, chute.id, within_s=30)
    except NomadError as exc:
        raise nomad_failure(exc) from None
    except Exception as exc:  # Consul trouble: the job is gone; the reconciler is done with it too
        log.warning("checking Consul after deleting %s failed: %r", chute.id, exc)
    await finish_delete(services, chute.id)


async def finish_delete(services: Services, chute_id: str) -> None:
    from chutes.scheduler import recorder

    await recorder.record_gone(services, chute_id)
    async with services.store.session() as session:
        row = await chutes_repo.get_chute(session, chute_id)
        route = (row.username, row.slug) if row is not None else None
        await chutes_repo.purge(session, chute_id)
        await secrets_repo.purge_chute(session, chute_id)  # a chute's secrets go with it
    services.events.announce()
    if route is not None:
        await services.announce_change(routes=[route])
