"""The reconciler: makes Nomad match the store, and records what the chutes' instances are doing.

Each tick (leader only), for every chute in the store: a missing Nomad job, or one that runs another version,
is registered again (placement first; an unschedulable chute is retried next tick); a count that drifted is
scaled back; a chute left ``deleting`` by a crash is purged. Nomad jobs that carry chutes' meta but whose chute
the store does not know are orphans and are purged. Instance state (Nomad allocation + Consul health, from
the cluster view read once per tick) is recorded by the recorder and each change announced once as an event.
Every step is idempotent: a tick can fail anywhere and the next one finishes the work.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import aiohttp

from chutes.manifest import Manifest
from chutes.scheduler import deploy, drift, recorder, runs
from chutes.scheduler.cluster_view import ViewSnapshot
from chutes.scheduler.loops import LeaderLoop
from chutes.scheduler.nomad_api import JobNotFound, NomadRejected, scaling_blocked
from chutes.scheduler.render import GROUP, RenderError, chute_version, job_id
from chutes.scheduler.services import Services
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import events as events_repo
from chutes.scheduler.store.instances import TERMINAL
from chutes.scheduler.store.models import Chute

log = logging.getLogger(__name__)

# A delete left half done for this long (the scheduler that was deleting died) is finished by the reconciler.
DELETE_GRACE_S = 60.0


# ------------------------------------------------------------------------------------------------ the tick


async def _note_unschedulable(services: Services, chute: Chute, explanation: str, data: dict[str, Any]) -> None:
    """Record an unschedulable chute once (not on every tick)."""
    async with services.store.session() as session:
        last = await events_repo.last_event(session, chute.id)
        row = await chutes_repo.get_chute(session, chute.id)
        if row is not None and row.status != "deleting":
            row.status, row.status_detail = "unschedulable", explanation
    if last is None or last.kind != "unschedulable" or last.message != explanation:
        await services.events.record(chute.id, "unschedulable", explanation, version=chute.version, data=data)


async def _url_answers(services: Services, url: str | None, checked: dict[str, bool]) -> bool:
    """Whether a scheduler answers at ``url`` (this scheduler's own address, or no address: yes)."""
    if url is None or url == services.public_url:
        return True
    if url not in checked:
        try:
            timeout = aiohttp.ClientTimeout(total=3)
            async with aiohttp.ClientSession(timeout=timeout) as http, http.get(f"{url}/healthz") as resp:
                checked[url] = resp.status == 200
        except (aiohttp.ClientError, TimeoutError, ValueError):
            checked[url] = False
    return checked[url]


async def converge_chute(
    services: Services,
    chute: Chute,
    jobs: dict[str, dict[str, Any]],
    snapshot: ViewSnapshot,
    url_checks: dict[str, bool] | None = None,
) -> None:
    """Bring one chute's Nomad jobs in line with the store and record its instances as ``snapshot`` shows them
    (``url_checks``: scheduler addresses probed)."""
    url_checks = {} if url_checks is None else url_checks
    if chute.status == "deleting":
        if time.time() - chute.updated_at < DELETE_GRACE_S:
            return  # the API call that is deleting it is still at work
        await deploy.purge_nomad(services, chute.id, Manifest.model_validate(chute.manifest))
        await deploy.finish_delete(services, chute.id)
        log.info("reconciler: finished deleting %s", chute.id)
        return
    manifest = Manifest.model_validate(chute.manifest)
    want_version = chute_version(chute.version)
    try:
        specs = await deploy.expected_specs(services, chute)
    except RenderError as exc:  # stored before a rule tightened: nothing to register, say why once per tick
        log.warning("reconciler: chute %s (%s) cannot be rendered: %s", chute.id, chute.name, exc)
        specs = {}
    stale = []
    for jid in deploy.nomad_job_ids(manifest):
        job = jobs.get(jid)
        if job is None or job.get("Stop") or (job.get("Meta") or {}).get("chute_version") != want_version:
            stale.append(jid)
        elif jid in specs and drift.drifted(job, specs[jid]):
            # Rendered differently now (a new runtime version, new settings).
            log.info("reconciler: the job %s differs from its current rendering: registering it again", jid)
            stale.append(jid)
        elif not await _url_answers(services, drift.registered_url(job), url_checks):
            # Its instances fetch their bundle from a scheduler address that no longer answers (one that
            # restarted elsewhere): a restarted instance could never start. Point them at this scheduler.
            log.info("reconciler: the job %s names a scheduler that does not answer: registering it again", jid)
            stale.append(jid)
    if stale:
        count = chute.desired_instances if manifest.cords else 1
        placements, failure = await deploy.plan(services, manifest, count, exclude_chute=chute.id, purpose="reconcile")
        if manifest.cords and count and not placements:
            assert failure is not None
            await _note_unschedulable(
                services, chute, f"no node can run it now: {failure.explanation}", deploy.unschedulable_json(failure)
            )
            return
        await deploy.submit(services, chute, placements)
        await services.events.record(
            chute.id, "registered",
            f"reconciler registered {', '.join(stale)} (missing, another version, or rendered differently now)",
            version=chute.version, data={"jobs": stale},
        )  # fmt: skip
        if manifest.cords:
            deploy.start_watch(services, chute.id, chute.version)
        return
    if manifest.cords:
        job = await services.nomad.find_job(job_id(chute.id)) or {}
        groups = {g.get("Name"): g for g in job.get("TaskGroups") or []}
        current: int | None = (groups.get(GROUP) or {}).get("Count")
        if current is not None and current != chute.desired_instances:
            try:
                await services.nomad.scale_job(job_id(chute.id), chute.desired_instances, message="chutes: reconciler")
            except NomadRejected as exc:
                if not scaling_blocked(exc):
                    raise
                # A rollout is under way; Nomad takes the new count once it ends: the next pass tries again.
                log.info(
                    "reconciler: %s is being rolled out; scaling it to %d waits", chute.id, chute.desired_instances
                )
            else:
                log.info("reconciler: scaled %s from %s to %d", chute.id, current, chute.desired_instances)
        await deploy.report_rollout(services, chute)
        views = await recorder.record_chute(services, chute, snapshot)
        if chute.desired_instances and not any(v.state not in TERMINAL for v in views):
            await _explain_nomad_failure(services, chute)


async def _explain_nomad_failure(services: Services, chute: Chute) -> None:
    """No instance although some are wanted: when Nomad failed to place them, record its reasons."""
    evaluations = await services.nomad.job_evaluations(job_id(chute.id))
    failed = [e for e in evaluations if e.placement_failed]
    if failed:
        reason = failed[-1].explanation()
        await _note_unschedulable(
            services,
            chute,
            f"Nomad could not place an instance: {reason}",
            {"nomad": reason, "evaluation": failed[-1].id},
        )


def orphaned(jobs: list[dict[str, Any]], chutes: dict[str, Chute]) -> list[str]:
    """Jobs that carry chutes' meta but that no chute in the store wants (dispatched children excluded)."""
    wanted: set[str] = set()
    for chute in chutes.values():
        wanted.update(deploy.nomad_job_ids(Manifest.model_validate(chute.manifest)))
    out = []
    for job in jobs:
        meta = job.get("Meta") or {}
        jid = job.get("ID") or ""
        if job.get("ParentID") or "chute_id" not in meta or meta.get("managed_by", "chutes") != "chutes":
            continue
        if meta["chute_id"] not in chutes or (jid not in wanted and chutes[meta["chute_id"]].status != "deleting"):
            out.append(jid)
    return out


async def reconcile_once(services: Services) -> None:
    """One pass over every chute and every chutes job in Nomad; failures of one chute do not stop the rest."""
    async with services.store.session() as session:
        chutes = {c.id: c for c in await chutes_repo.list_all(session)}
    stubs = await services.nomad.list_jobs("chute-", meta=True)
    jobs: dict[str, dict[str, Any]] = {}
    for stub in stubs:
        if not stub.get("ParentID"):
            jobs[stub["ID"]] = stub
    snapshot = await services.view.current()
    failures = 0
    url_checks: dict[str, bool] = {}  # each scheduler address probed once per tick
    for chute in chutes.values():
        try:
            await converge_chute(services, chute, jobs, snapshot, url_checks)
        except Exception:
            failures += 1
            log.exception("reconciler: chute %s (%s)", chute.id, chute.name)
    for jid in orphaned(list(jobs.values()), chutes):
        log.warning("reconciler: purging orphaned Nomad job %s", jid)
        with contextlib.suppress(JobNotFound):
            await services.nomad.deregister_job(jid, purge=True)
    await runs.refresh_unfinished(services)
    if failures:
        raise RuntimeError(f"{failures} chute(s) failed to reconcile (see above); retrying")


def leader_loops(services: Services) -> list[LeaderLoop]:
    config = services.config
    return [
        LeaderLoop(
            "reconciler",
            config.reconcile_interval_s,
            lambda: reconcile_once(services),
            max_backoff=config.loop_max_backoff_s,
        )
    ]
