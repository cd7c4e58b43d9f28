"""The reconciler: makes Nomad match the store, and records what the chutes' instances are doing.

Each tick (leader only), for every chute in the store: a missing Nomad job, or one that runs another version,
is registered again (placement first; an unschedulable chute is retried next tick); a count that drifted is
scaled back; a chute left ``deleting`` by a crash is purged. Nomad jobs that carry chutes' meta but whose chute
the store does not know are orphans and are purged. Instance state (Nomad allocation + Consul health) is
recorded and each change announced once as an event. Every step is idempotent: a tick can fail anywhere and
the next one finishes the work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp

from chutes.core import health
from chutes.core.inventory import KV_PREFIX
from chutes.manifest import Manifest
from chutes.scheduler import deploy, drift, reservations, runs, task_events
from chutes.scheduler.loops import LeaderLoop
from chutes.scheduler.nomad_api import JobNotFound, NomadError, NomadRejected, allocation_gpu_ids, scaling_blocked
from chutes.scheduler.render import GROUP, RenderError, chute_version, job_id, service_name
from chutes.scheduler.runs import last_task_message
from chutes.scheduler.services import Services
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import events as events_repo
from chutes.scheduler.store import instances as instances_repo
from chutes.scheduler.store.instances import TERMINAL, Observed, Transition
from chutes.scheduler.store.models import Chute, Instance

log = logging.getLogger(__name__)

# A delete left half done for this long (the scheduler that was deleting died) is finished by the reconciler.
DELETE_GRACE_S = 60.0
_CLIENT_STATES = {"pending": "pending", "complete": "stopped", "failed": "failed", "lost": "lost"}


@dataclass(frozen=True)
class InstanceView:
    """One allocation of a chute as the API shows it."""

    alloc_id: str
    state: str
    healthy: bool
    node_id: str | None
    nomad_node_id: str | None
    gpu_model: str | None
    gpu_count: int
    gpu_uuids: tuple[str, ...]
    desired_status: str | None
    client_status: str | None
    address: str | None
    port: int | None
    version: str | None
    created_at: float | None
    message: str = ""


def instance_state(alloc: dict[str, Any], healthy: bool) -> str:
    status = alloc.get("ClientStatus") or "pending"
    if status == "running":
        return "ready" if healthy else "running"
    return _CLIENT_STATES.get(status, "pending")


def _assess(alloc: dict[str, Any], healthy: bool, row: Instance | None) -> tuple[str, str, float | None]:
    """(state, message, when it stopped serving) of an allocation, from Nomad, Consul and its last record.

    A live allocation that is not ready and whose task failed since it was last ready is ``failing``, with
    Nomad's reason. An instance recorded ready whose task ended or restarted since stopped serving at that
    moment (task events), not when this observation happens to see it.
    """
    state = instance_state(alloc, healthy)
    since = row.ready_at if row is not None and row.ready_at is not None else 0.0
    message = ""
    if state in ("running", "pending"):
        found = task_events.trouble(alloc, since)
        if found is not None:
            state, message = "failing", found.message
    elif state in TERMINAL:
        message = last_task_message(alloc)
    left_at: float | None = None
    if row is not None and row.state == "ready" and row.ready_at is not None:
        # Event times come from Nomad's clock: only events clearly after the recorded ready time count.
        ended = task_events.stopped_serving(alloc, row.ready_at + task_events.CLOCK_SLACK_S)
        if ended is not None:
            left_at = min(max(ended, row.ready_at), time.time())
    return state, message, left_at


async def consul_health(services: Services, chute_id: str) -> dict[str, tuple[bool, str | None, int | None]]:
    """alloc id → (all checks passing, address, port) for the chute's service entries in Consul."""
    _, entries = await services.consul.health.service(service_name(chute_id))
    return {a: (h.passing, h.address or None, h.port or None) for a, h in health.by_allocation(entries).items()}


async def _node_inventory(services: Services, node_name: str | None) -> dict[str, Any] | None:
    if not node_name:
        return None
    _, item = await services.consul.kv.get(f"{KV_PREFIX}{node_name}")
    if not item or not item.get("Value"):
        return None
    try:
        data = json.loads(item["Value"])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def placement_of(services: Services, alloc_id: str) -> tuple[str | None, str | None, str | None, tuple[str, ...]]:
    """(node id, Nomad node id, GPU model, GPU uuids) of an allocation, from Nomad and the node's inventory."""
    full = await services.nomad.read_allocation(alloc_id)
    uuids = tuple(allocation_gpu_ids(full))
    node_name = full.get("NodeName") or None
    inventory = await _node_inventory(services, node_name)
    model: str | None = None
    if inventory is not None:
        by_uuid = {g.get("uuid"): g.get("model") for g in inventory.get("gpus") or []}
        models = Counter(by_uuid.get(u) for u in uuids if by_uuid.get(u))
        if models:
            model = models.most_common(1)[0][0]
    if model is None and full.get("NodeID"):
        try:
            node = await services.nomad.read_node(full["NodeID"])
            model = (node.get("Meta") or {}).get("chutes_gpu_model") or None
        except NomadError:
            pass
    return node_name, full.get("NodeID") or None, model, uuids


def _event_for(t: Transition, chute: Chute, view: InstanceView) -> tuple[str, str] | None:
    short = view.alloc_id[:8]
    where = view.node_id or "?"
    if t.new == "running":
        return "running", f"instance {short} running on {where}"
    if t.new == "ready":
        return "ready", f"instance {short} ready on {where} (passing in Consul)"
    if t.new == "failed":
        return "failed", f"instance {short} on {where} failed: {view.message or 'no message'}"
    if t.new == "failing":
        return "failed", f"instance {short} on {where} is failing: {view.message or 'no message'}"
    if t.new == "lost":
        return "failed", f"instance {short} on {where} was lost (node down?)"
    if t.new == "stopped":
        return "stopped", f"instance {short} on {where} stopped"
    return None


async def observe_chute(services: Services, chute: Chute) -> list[InstanceView]:
    """Read the chute's allocations and Consul health, record changes of state (each announced once as an
    event), keep the chute's status in step, and return the instances."""
    try:
        allocs = await services.nomad.job_allocations(job_id(chute.id))
    except JobNotFound:
        allocs = []
    health = await consul_health(services, chute.id)
    async with services.store.session() as session:
        known = {i.alloc_id: i for i in await instances_repo.list_for(session, chute.id)}
        await reservations.confirm(session, chute.id, allocs)  # Nomad placed them: the promise is kept
    views: list[InstanceView] = []
    changes: list[tuple[Transition, InstanceView]] = []
    for alloc in allocs:
        alloc_id = alloc["ID"]
        healthy, address, port = health.get(alloc_id, (False, None, None))
        row = known.get(alloc_id)
        state, message, left_at = _assess(alloc, healthy, row)
        uuids: tuple[str, ...] = ()
        node_id: str | None
        nomad_node_id: str | None
        model: str | None
        if row is not None and row.gpu_model is not None and row.state == state:
            node_id, nomad_node_id, model = row.node_id, row.nomad_node_id, row.gpu_model
        else:
            node_id, nomad_node_id, model, uuids = await placement_of(services, alloc_id)
        view = InstanceView(
            alloc_id=alloc_id, state=state, healthy=healthy, node_id=node_id, nomad_node_id=nomad_node_id,
            gpu_model=model, gpu_count=len(uuids) or (row.gpu_count if row else 0), gpu_uuids=uuids,
            desired_status=alloc.get("DesiredStatus"), client_status=alloc.get("ClientStatus"), address=address,
            port=port, version=row.version if row else chute.version,
            created_at=(alloc.get("CreateTime") or 0) / 1e9 or None, message=message,
        )  # fmt: skip
        views.append(view)
        observed = [
            Observed(alloc_id, chute.id, view.version, state, node_id=node_id, nomad_node_id=nomad_node_id,
                     gpu_model=model, gpu_count=view.gpu_count, at=left_at if state != "ready" else None)
        ]  # fmt: skip
        if state == "ready" and left_at is not None:
            # Ready now and when last seen, but its task ended in between (a restart, a devcluster restart):
            # it stopped serving then, and is ready again from now.
            observed.insert(0, dataclasses.replace(observed[0], state="running", at=left_at))
        for obs in observed:
            async with services.store.session() as session:
                t = await instances_repo.record(session, obs)
            if t is not None:
                changes.append((t, dataclasses.replace(view, state=obs.state)))
    # Records of allocations Nomad no longer lists (job purged, garbage-collected) end here.
    listed = {v.alloc_id for v in views}
    for alloc_id, row in known.items():
        if alloc_id not in listed and row.state not in TERMINAL:
            async with services.store.session() as session:
                t = await instances_repo.record(session, Observed(alloc_id, chute.id, row.version, "stopped"))
            if t is not None:
                changes.append((t, InstanceView(alloc_id, "stopped", False, row.node_id, row.nomad_node_id,
                                                row.gpu_model, row.gpu_count, (), None, None, None, None,
                                                row.version, row.created_at)))  # fmt: skip
    for t, view in changes:
        if t.old is None:
            what = f"{view.gpu_count}× {view.gpu_model or 'GPU'}" if view.gpu_count else "no GPU"
            await services.events.record(
                chute.id, "placed", f"instance {view.alloc_id[:8]} placed on node {view.node_id} with {what}",
                version=view.version, data=_view_data(view),
            )  # fmt: skip
        event = _event_for(t, chute, view)
        if event is not None and not (t.old is None and t.new == "pending"):
            await services.events.record(chute.id, event[0], event[1], version=view.version, data=_view_data(view))
    await _update_status(services, chute, views)
    return views


def _view_data(view: InstanceView) -> dict[str, Any]:
    return {"instance_id": view.alloc_id, "node_id": view.node_id, "gpu_model": view.gpu_model,
            "gpu_count": view.gpu_count, "state": view.state}  # fmt: skip


async def _update_status(services: Services, chute: Chute, views: list[InstanceView]) -> None:
    live = [v for v in views if v.state not in TERMINAL]
    states = Counter(v.state for v in live)
    failing = next((v for v in live if v.state == "failing"), None)
    if states["ready"]:
        status, detail = "ready", f"{states['ready']} of {chute.desired_instances} instances ready"
        if failing is not None:
            detail += f"; {states['failing']} failing: {failing.message}"
    elif failing is not None:
        status, detail = "failing", f"{states['failing']} instance(s) failing: {failing.message}"
    elif states["running"]:
        status, detail = "running", "starting: waiting for /_ready"
    elif states["pending"]:
        status, detail = "deploying", "instances pending"
    elif chute.desired_instances == 0:
        status, detail = "idle", "scaled to zero"
    else:
        return  # nothing placed yet: keep what the deploy or the reconciler said (registered, unschedulable)
    async with services.store.session() as session:
        row = await chutes_repo.get_chute(session, chute.id)
        if row is not None and row.status != "deleting" and (row.status, row.status_detail) != (status, detail):
            row.status, row.status_detail = status, detail


async def record_gone(services: Services, chute_id: str) -> None:
    """Mark every live instance record of a chute as stopped (its jobs were purged)."""
    async with services.store.session() as session:
        rows = await instances_repo.list_for(session, chute_id, live_only=True)
    for row in rows:
        async with services.store.session() as session:
            await instances_repo.record(session, Observed(row.alloc_id, chute_id, row.version, "stopped"))


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
    services: Services, chute: Chute, jobs: dict[str, dict[str, Any]], url_checks: dict[str, bool] | None = None
) -> None:
    """Bring one chute's Nomad jobs in line with the store (``url_checks``: scheduler addresses probed)."""
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
        views = await observe_chute(services, chute)
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
    failures = 0
    url_checks: dict[str, bool] = {}  # each scheduler address probed once per tick
    for chute in chutes.values():
        try:
            await converge_chute(services, chute, jobs, url_checks)
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
