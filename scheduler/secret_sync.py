"""Keeping each chute's Nomad Variables in line with the store: secrets, instance tokens, the invoke secret.

``write_variables`` computes a chute's items from the store (opening the sealed secrets; for a job's variable,
also the tokens of its unfinished runs) and writes them to the Variable of each of its Nomad jobs with
check-and-set, computing them again after each conflict, so two schedulers (or two dispatches) writing at once
cannot leave an older set behind. The deploy flow calls it before every job registration, a dispatch before it
dispatches (and again once the run has finished); a secrets change calls ``apply``, which also registers the
chute's jobs again when the *names* of its secrets changed (the template lists them). Whatever an API call could
not finish (Nomad down) the leader's ``secrets`` loop finishes: chutes whose secrets changed after
Nomad last saw them, and Variables of chutes that no longer exist.

Nothing here logs, records or raises a secret value: messages name chutes, paths and secret names only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from chutes.manifest import Manifest
from chutes.scheduler import secret_env
from chutes.scheduler.errors import Invalid, Unavailable, UpstreamError
from chutes.scheduler.loops import LeaderLoop
from chutes.scheduler.nomad_api import JobNotFound, NomadError, VariableConflict
from chutes.scheduler.render import SECRETS_META, batch_job_id, job_id
from chutes.scheduler.secret_box import SecretsKeyError, sealed_context
from chutes.scheduler.services import Services
from chutes.scheduler.store import chute_secrets as secrets_repo
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import jobs as jobs_repo
from chutes.scheduler.store.models import Chute, ChuteVersion
from chutes.scheduler.store.secrets import instance_token, run_token, token_secret

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 5
_CHUTE_PATH = re.compile(r"^nomad/jobs/chute-([0-9a-f-]{36})(?:-job-.+)?$")


async def desired_items(services: Services, chute: Chute, job_name: str | None = None) -> tuple[dict[str, str], int]:
    """The items of the chute's Variable (of its job ``job_name``'s, with its unfinished runs' tokens) and the
    secrets generation they reflect."""
    from sqlalchemy import select

    async with services.store.session() as session:
        store_secret = await token_secret(session)
        query = select(ChuteVersion.sha256).where(ChuteVersion.chute_id == chute.id)
        shas = list((await session.execute(query)).scalars())
        rows = await secrets_repo.for_chute(session, chute.id)
        generation = await secrets_repo.generation(session, chute.id)
        runs = await jobs_repo.list_runs(session, chute_id=chute.id, unfinished=True) if job_name else []
    if chute.version not in shas:
        shas.append(chute.version)
    values: dict[str, str] = {}
    if rows:
        box = services.secrets
        if box is None:
            raise SecretsKeyError(
                f"chute {chute.name!r} has secrets but this scheduler has no CHUTES_SECRETS_KEY",
                "start every scheduler with the same CHUTES_SECRETS_KEY",
            )
        values = {row.name: box.open(row.sealed, sealed_context(chute.id, row.name)) for row in rows}
    tokens = {sha: instance_token(store_secret, chute.id, sha) for sha in shas}
    run_tokens = {run.id: run_token(store_secret, run.id) for run in runs if run.job_name == job_name}
    return secret_env.variable_items(chute.invoke_secret, tokens, values, run_tokens), generation


async def _put(services: Services, path: str, items: Callable[[], Awaitable[dict[str, str]]]) -> None:
    for _ in range(CAS_ATTEMPTS):
        current = [v for v in await services.nomad.list_variables(path) if v.get("Path") == path]
        cas = int(current[0].get("ModifyIndex") or 0) if current else 0
        try:
            # Computed after reading the index: whatever the store held before this write is in it.
            await services.nomad.put_variable(path, await items(), cas=cas)
            return
        except VariableConflict:
            continue  # another scheduler wrote it in between: read its index again, compute and write ours
    raise UpstreamError("Nomad", f"variable {path} kept changing while it was written", unreachable=True,
                        hint="retry shortly")  # fmt: skip


def _jobs(manifest: Manifest) -> list[tuple[str, str | None]]:
    """(Nomad job id, job name: None for the service job) of each of the chute's Nomad jobs."""
    if manifest.cords:
        return [(job_id(manifest.chute_id), None)]
    return [(batch_job_id(manifest.chute_id, spec.name), spec.name) for spec in manifest.jobs]


async def write_variables(
    services: Services, chute: Chute, manifest: Manifest | None = None, *, only_job: str | None = None
) -> int:
    """Write the chute's items to the Variable of each of its Nomad jobs (``only_job``: of that job method's
    only); the generation written."""
    manifest = manifest or Manifest.model_validate(chute.manifest)
    generation = 0

    async def items(job_name: str | None) -> dict[str, str]:
        nonlocal generation
        found, generation = await desired_items(services, chute, job_name)
        return found

    try:
        targets = [(jid, name) for jid, name in _jobs(manifest) if only_job is None or name == only_job]
        for jid, job_name in targets:
            await _put(services, secret_env.variable_path(jid), lambda name=job_name: items(name))  # type: ignore[misc]
        if not targets:
            _, generation = await desired_items(services, chute)
    except SecretsKeyError as exc:
        raise Unavailable(str(exc), exc.hint) from None
    except secret_env.SecretInputError as exc:
        raise Invalid(f"chute {chute.name!r}: {exc}", exc.hint) from None
    except NomadError as exc:
        from chutes.scheduler.deploy import nomad_failure

        raise nomad_failure(exc) from None
    return generation


async def delete_variables(services: Services, chute_id: str) -> None:
    """Delete every Variable of the chute's jobs (those of its service job and of its job methods)."""
    prefix = secret_env.variable_path(job_id(chute_id))
    try:
        for var in await services.nomad.list_variables(prefix):
            path = str(var.get("Path") or "")
            match = _CHUTE_PATH.match(path)
            if match and match.group(1) == chute_id:
                await services.nomad.delete_variable(path)
    except NomadError as exc:
        from chutes.scheduler.deploy import nomad_failure

        raise nomad_failure(exc) from None


async def _registered_names(services: Services, manifest: Manifest) -> set[str | None]:
    """The secret names each registered job of the chute lists (None: a job is missing)."""
    from chutes.scheduler.deploy import nomad_job_ids

    seen: set[str | None] = set()
    for jid in nomad_job_ids(manifest):
        try:
            job = await services.nomad.read_job(jid)
        except JobNotFound:
            seen.add(None)
            continue
        seen.add(str((job.get("Meta") or {}).get(SECRETS_META, "")))
    return seen


async def apply(services: Services, chute_id: str) -> bool:
    """Bring Nomad in line after the chute's secrets changed; False when the chute is not deployed (nothing to do)."""
    from chutes.scheduler import deploy

    async with services.store.session() as session:
        chute = await chutes_repo.get_chute(session, chute_id)
        names = await secrets_repo.names(session, chute_id)
    if chute is None or chute.status == "deleting":
        async with services.store.session() as session:
            await secrets_repo.mark_synced(session, chute_id, await secrets_repo.generation(session, chute_id))
        return False
    manifest = Manifest.model_validate(chute.manifest)
    generation = await write_variables(services, chute, manifest)
    try:
        registered = await _registered_names(services, manifest)
    except NomadError as exc:
        raise deploy.nomad_failure(exc) from None
    if registered != {",".join(names)} and None not in registered:
        # The template lists the secrets by name: register the jobs again with the new list.
        count = chute.desired_instances if manifest.cords else 1
        placements, _ = await deploy.plan(services, manifest, count, exclude_chute=chute.id) if count else ([], None)
        await deploy.submit(services, chute, placements)
    async with services.store.session() as session:
        await secrets_repo.mark_synced(session, chute_id, generation)
    return True


async def sync_once(services: Services) -> None:
    """The leader's tick: apply what API calls left pending; delete Variables of chutes that are gone."""
    async with services.store.session() as session:
        pending = await secrets_repo.pending(session)
    failures = 0
    for chute_id in pending:
        try:
            await apply(services, chute_id)
        except Exception as exc:  # one chute's trouble must not stop the others; retried next tick
            failures += 1
            log.warning("secrets of chute %s not applied yet: %s", chute_id, getattr(exc, "detail", exc))
    variables = await services.nomad.list_variables("nomad/jobs/chute-")
    # Read after listing: a deploy stores its chute before it writes the chute's variables, so every variable
    # listed here whose chute is unknown now belongs to a deleted chute.
    async with services.store.session() as session:
        known = {c.id for c in await chutes_repo.list_all(session)}
    for var in variables:
        match = _CHUTE_PATH.match(str(var.get("Path") or ""))
        if match and match.group(1) not in known:
            log.info("deleting the variable %s of a chute that no longer exists", var["Path"])
            await services.nomad.delete_variable(str(var["Path"]))
    if failures:
        raise RuntimeError(f"{failures} chute(s) still have secrets to apply")


def leader_loops(services: Services) -> list[LeaderLoop]:
    config = services.config
    return [LeaderLoop("secrets", config.reconcile_interval_s, lambda: sync_once(services), config.loop_max_backoff_s)]
