"""Image builds, the I/O around ``images.build``: accept a context, run its build job, follow it, record it.

``submit`` checks an uploaded context again (``chutes.image.pack.read_archive``), and answers from the store
when the same context was built already for this scheduler's runtime (a cache hit: no Nomad job), joins a
build under way, or stores the image (``queued``) and starts its build: the build's credential goes to the
job's Nomad Variable first, then the job is registered. A follower task (in the scheduler that started the
build, and the leader's ``images`` loop for builds whose scheduler went away) watches the job's allocation,
then reads the build's log through Nomad's logs API, records the digest (``ready``) or the failing step
(``failed``), keeps the log's tail in the store, and takes the credential out of the Variable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from chutes.image.pack import ContextError, read_archive
from chutes.scheduler.errors import Conflict, Forbidden, Invalid, LimitReached, NotFound, TooLarge, Unavailable
from chutes.scheduler.images import build
from chutes.scheduler.images.wheel import runtime_wheel
from chutes.scheduler.loops import LeaderLoop
from chutes.scheduler.nomad_api import JobNotFound, NomadError
from chutes.scheduler.services import Services
from chutes.scheduler.store import images as images_repo
from chutes.scheduler.store.image_models import ImageRow
from chutes.scheduler.store.secrets import token_secret
from chutes.scheduler.store.users import Principal

log = logging.getLogger(__name__)

LOG_KEPT_BYTES = 256 * 1024
PLACEMENT_GRACE_S = 3.0  # a build not placed this long after a placement failure is refused with the reason
POLL_S = 0.5
QUEUED_STALE_S = 60.0  # a queued build this old was never started (its scheduler stopped): the leader starts it
_followers: dict[str, asyncio.Task[None]] = {}


def not_configured() -> Conflict:
    # A 4xx: the request is fine, this scheduler does not offer the feature (GET /v1/images says so beforehand).
    return Conflict(
        "image builds are not configured on this scheduler (no registry)",
        "set CHUTES_REGISTRY (host[:port]) on the scheduler; `chutes dev` does when buildah and docker-registry "
        "are installed (see docs/images.md)",
    )


def build_settings(services: Services) -> build.BuildSettings:
    config = services.config
    if not config.registry:
        raise not_configured()
    key, _, value = config.builder_node_meta.partition("=")
    return build.BuildSettings(
        scheduler_url=services.public_url,
        registry=config.registry,
        registry_tls_verify=config.registry_tls_verify,
        ca_bundle=config.build_ca_bundle,
        timeout_s=config.build_timeout_s,
        node_meta_key=key or None,
        node_meta_value=value or "true",
        node_class=config.builder_node_class,
        isolation=config.build_isolation,
        datacenters=config.datacenters,
        region=config.nomad_region,
        namespace=config.nomad_namespace,
    )


def _registry_auth(services: Services) -> str | None:
    path = services.config.registry_auth_file
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Unavailable(
            f"cannot read CHUTES_REGISTRY_AUTH_FILE: {exc.strerror}", "fix the scheduler's setting"
        ) from None


async def submit(
    services: Services, principal: Principal, archive: bytes, *, rebuild: bool = False
) -> tuple[ImageRow, bool]:
    """Store and build an uploaded context, or find it built or building; (image, whether nothing new started)."""
    settings = build_settings(services)
    config = services.config
    try:
        context = await asyncio.to_thread(read_archive, archive, config.max_context_bytes)
    except ContextError as exc:
        kind = TooLarge if "over" in str(exc) and "bytes" in str(exc) else Invalid
        raise kind(f"build context refused: {exc}", exc.hint or "pack it with `chutes build`") from None
    meta = context.meta
    if meta.username != principal.username and not principal.is_admin and not config.dev_adopt_users:
        raise Forbidden(
            f"the image names user {meta.username!r}; you are {principal.username!r}",
            "set Image(username=...) (or the chute's username) to your own",
        )
    wheel = await asyncio.to_thread(runtime_wheel)
    async with services.store.session() as session:
        row = await images_repo.get(session, context.image_id)
        if row is not None and row.owner_id != principal.user_id and not principal.is_admin:
            raise Conflict("this build context belongs to another user's image", "change the image's name")
        if row is not None:
            current = row.runtime_version == wheel.version
            if row.status in images_repo.ACTIVE or (row.status == "ready" and current):
                return row, True
            if row.status == "failed" and not rebuild:
                return row, True
        active = await images_repo.active_count(session, principal.user_id)
        if active >= config.max_concurrent_builds:
            raise LimitReached(
                f"you have {active} builds under way (at most {config.max_concurrent_builds} at once)",
                "wait for one to finish (`chutes images list`), then build again",
            )
        ref = build.target_ref(settings.registry, principal.username, meta.name, meta.tag)
        if row is None:
            row = ImageRow(
                id=context.image_id, owner_id=principal.user_id, username=principal.username, name=meta.name,
                tag=meta.tag, kind=meta.kind, base=meta.base, context=archive, context_bytes=context.size,
                dockerfile=context.dockerfile,
            )  # fmt: skip
            session.add(row)
        row.status, row.error, row.log, row.ref, row.digest = "queued", None, None, None, None
        row.runtime_version, row.attempt = wheel.version, (row.attempt or 0) + 1
        row.queued_at, row.started_at, row.finished_at, row.alloc_id = time.time(), None, None, None
        row.log_location = None
        row.build_job_id = build.build_job_id(context.image_id)
        await session.flush()
        image_id, attempt = row.id, row.attempt
    await _start(services, image_id, attempt, ref, principal.username, settings)
    async with services.store.session() as session:
        started = await images_repo.get(session, image_id)
    assert started is not None
    return started, False


async def _start(
    services: Services, image_id: str, attempt: int, ref: str, username: str, settings: build.BuildSettings
) -> None:
    job = build.render_build_job(image_id, ref, username, settings)
    async with services.store.session() as session:
        token = images_repo.build_token(await token_secret(session), image_id, attempt)
    try:
        await services.nomad.put_variable(
            build.variable_job_path(image_id), build.variable_items(token, _registry_auth(services))
        )
        with _suppress_missing():
            await services.nomad.deregister_job(job["ID"], purge=True)  # an earlier attempt's job
        await services.nomad.register_job(job)
    except NomadError as exc:
        await _finish(services, image_id, "failed", error=f"the build job could not be registered: {exc}")
        from chutes.scheduler.deploy import nomad_failure

        raise nomad_failure(exc) from None
    async with services.store.session() as session:
        row = await images_repo.get(session, image_id)
        if row is not None and row.status == "queued":
            images_repo.set_status(row, "building")
            row.log_location = f"nomad:job/{job['ID']}"
    follow(services, image_id)


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, JobNotFound)


def follow(services: Services, image_id: str) -> None:
    """Follow a build in this process until it finishes (once per image)."""
    if image_id in _followers and not _followers[image_id].done():
        return
    task = asyncio.create_task(_follow(services, image_id), name=f"image-build:{image_id[:12]}")
    _followers[image_id] = task
    task.add_done_callback(lambda t: _followers.pop(image_id, None) if _followers.get(image_id) is t else None)


async def _follow(services: Services, image_id: str) -> None:
    failures = 0
    while True:
        try:
            row = await refresh(services, image_id)
            failures = 0
            if row is None or row.status in images_repo.FINAL:
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Nomad away for a moment: keep following
            failures += 1
            log.warning("following the build of image %s: %r", image_id[:12], exc)
        await asyncio.sleep(min(POLL_S * (1 + failures), 10.0))


async def stop_followers() -> None:
    tasks = list(_followers.values())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def refresh(services: Services, image_id: str) -> ImageRow | None:
    """Bring one build's row in line with its Nomad job; finish it once its allocation has ended."""
    async with services.store.session() as session:
        row = await images_repo.get(session, image_id)
    if row is None or row.status not in images_repo.ACTIVE or not row.build_job_id:
        return row
    job_id = row.build_job_id
    try:
        allocs = await services.nomad.job_allocations(job_id, all_=True)
    except JobNotFound:
        return await _finish(services, image_id, "failed", error="its Nomad build job is gone")
    limit = services.config.build_timeout_s + 120
    if row.started_at is not None and time.time() - row.started_at > limit:
        with _suppress_missing():
            await services.nomad.deregister_job(job_id, purge=False)
        return await _finish(services, image_id, "failed", error=f"the build ran past its time limit ({limit} s)")
    if not allocs:
        for evaluation in await services.nomad.job_evaluations(job_id):
            if evaluation.placement_failed and time.time() - (row.started_at or row.queued_at) > PLACEMENT_GRACE_S:
                return await _finish(
                    services, image_id, "failed",
                    error=f"no node can build images: {evaluation.explanation()} (builder nodes have the node meta "
                    f"{services.config.builder_node_meta or '(none)'}; set CHUTES_BUILDER_NODE_META / "
                    "CHUTES_BUILDER_NODE_CLASS, or give a node that meta)",
                )  # fmt: skip
        return row
    alloc = max(allocs, key=lambda a: a.get("CreateIndex", 0))
    alloc_id = str(alloc.get("ID"))
    if row.alloc_id != alloc_id:
        async with services.store.session() as session:
            fresh = await images_repo.get(session, image_id)
            if fresh is not None:
                fresh.alloc_id, fresh.log_location = alloc_id, f"nomad:alloc/{alloc_id}/{build.TASK}"
    status = alloc.get("ClientStatus")
    if status not in ("complete", "failed", "lost"):
        return row
    text = await read_build_log(services, alloc_id)
    outcome = build.read_log(text)
    kept = text[-LOG_KEPT_BYTES:]
    if status == "complete" and outcome.digest:
        ref = build.target_ref(services.config.registry or "", row.username, row.name, row.tag) + "@" + outcome.digest
        return await _finish(services, image_id, "ready", digest=outcome.digest, ref=ref, log_text=kept)
    from chutes.scheduler.runs import last_task_message

    step = outcome.failed_step or "the build"
    last = "\n".join(outcome.tail[-15:])
    reason = _exit_reason(alloc) or last_task_message(alloc) or f"allocation {status}"
    return await _finish(
        services, image_id, "failed", error=f"failed at {step} ({reason})\n{last}".strip(), log_text=kept
    )


def _exit_reason(alloc: dict[str, object]) -> str | None:
    """``exit code N`` from the build task's Terminated event, if it has one."""
    states = alloc.get("TaskStates") or {}
    state = states.get(build.TASK) if isinstance(states, dict) else None
    for event in reversed((state or {}).get("Events") or []):
        if event.get("Type") == "Terminated":
            code = event.get("ExitCode", (event.get("Details") or {}).get("exit_code"))
            return f"exit code {code}"
    return None


async def read_build_log(services: Services, alloc_id: str) -> str:
    chunks: list[bytes] = []
    try:
        async for data in services.nomad.stream_logs(alloc_id, task=build.TASK, stream="stdout", follow=False):
            chunks.append(data)
    except NomadError as exc:
        log.warning("reading the log of build allocation %s: %s", alloc_id, exc)
    return b"".join(chunks).decode(errors="replace")


async def _finish(
    services: Services,
    image_id: str,
    status: str,
    *,
    error: str | None = None,
    digest: str | None = None,
    ref: str | None = None,
    log_text: str | None = None,
) -> ImageRow | None:
    async with services.store.session() as session:
        row = await images_repo.get(session, image_id)
        if row is None:
            return None
        images_repo.set_status(row, status, error=error)
        if digest is not None:
            row.digest, row.ref = digest, ref
        if log_text is not None:
            row.log = log_text
        row.log_location = "store"
    try:  # the credential is refused from now on anyway; this takes it out of Nomad too
        await services.nomad.delete_variable(build.variable_job_path(image_id))
    except NomadError as exc:
        log.debug("deleting the variable of build %s: %s", image_id[:12], exc)
    log.info("image %s: %s%s", image_id[:12], status, f" ({ref})" if ref else "")
    return row


async def log_lines(services: Services, image_id: str, follow_: bool) -> AsyncIterator[str]:
    """The build's output, line by line: from Nomad while it runs (``follow_``: until it ends), then the store."""
    sent = 0
    while True:
        async with services.store.session() as session:
            row = await images_repo.get(session, image_id)
        if row is None:
            return
        if row.status in images_repo.FINAL:
            lines = (row.log or "").splitlines()
            for line in lines[sent:]:
                yield line
            if row.status == "failed" and not row.log and row.error:
                yield f"build failed: {row.error}"
            return
        if row.alloc_id:
            buffer = ""
            count = 0
            try:
                async for data in services.nomad.stream_logs(
                    row.alloc_id, task=build.TASK, stream="stdout", follow=follow_
                ):
                    buffer += data.decode(errors="replace")
                    *complete, buffer = buffer.split("\n")
                    for line in complete:
                        count += 1
                        if count > sent:
                            sent = count
                            yield line
            except NomadError as exc:
                log.debug("streaming build log %s: %s", image_id[:12], exc)
            if buffer:
                count += 1
                if count > sent:
                    sent = count
                    yield buffer
            if not follow_:
                return
            # The task ended: wait for the follower to record the outcome, then yield what the stream missed.
            for _ in range(60):
                async with services.store.session() as session:
                    row = await images_repo.get(session, image_id)
                if row is None or row.status in images_repo.FINAL:
                    break
                await asyncio.sleep(POLL_S)
            continue
        if not follow_:
            return
        await asyncio.sleep(POLL_S)


async def delete(services: Services, row: ImageRow) -> None:
    """Forget an image: stop its build, purge its job, delete its row (the registry keeps the pushed image)."""
    job_id = build.build_job_id(row.id)
    try:
        with _suppress_missing():
            await services.nomad.deregister_job(job_id, purge=True)
    except NomadError as exc:
        from chutes.scheduler.deploy import nomad_failure

        raise nomad_failure(exc) from None
    try:
        await services.nomad.delete_variable(build.variable_job_path(row.id))
    except NomadError as exc:
        log.debug("deleting the variable of build %s: %s", row.id[:12], exc)
    task = _followers.pop(row.id, None)
    if task is not None:
        task.cancel()
    async with services.store.session() as session:
        fresh = await images_repo.get(session, row.id)
        if fresh is not None:
            await session.delete(fresh)


async def ready_ref(services: Services, principal: Principal, image_id: str) -> str:
    """The pushed reference of a built image the caller may deploy; 409 with the build's error when it failed."""
    async with services.store.session() as session:
        row = await images_repo.get(session, image_id) if len(image_id) == 64 else None
    if row is None or (row.owner_id != principal.user_id and not principal.is_admin):
        raise NotFound(f"image {image_id[:64]!r} not found", "build it with `chutes build FILE:ATTR`")
    if row.status == "failed":
        raise Conflict(
            f"image {row.name}:{row.tag} ({row.id[:12]}) failed to build, so nothing was deployed: {row.error}",
            "fix the Image and deploy again (`chutes images logs` shows the build's output)",
        )
    if row.status != "ready" or not row.ref:
        raise Conflict(f"image {row.name}:{row.tag} is still {row.status}", "wait for its build to finish")
    return row.ref


async def follow_orphans(services: Services) -> None:
    """The leader's tick: follow every build under way that no task of this process follows, and start the
    builds that were stored but never registered."""
    if not services.config.registry:
        return
    async with services.store.session() as session:
        active = await images_repo.list_active(session)
    for row in active:
        if row.status == "building":
            follow(services, row.id)
        elif time.time() - row.queued_at > QUEUED_STALE_S:
            # Stored, never registered (its scheduler stopped in between): start it now.
            settings = build_settings(services)
            ref = build.target_ref(settings.registry, row.username, row.name, row.tag)
            await _start(services, row.id, row.attempt, ref, row.username, settings)


def leader_loops(services: Services) -> list[LeaderLoop]:
    config = services.config
    return [
        LeaderLoop("images", config.reconcile_interval_s, lambda: follow_orphans(services), config.loop_max_backoff_s)
    ]
