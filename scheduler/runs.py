"""Job runs: dispatch one run of a chute's job (a parameterized Nomad batch job) and follow its state.

The run id is the dispatch's idempotency token, so a retried dispatch cannot start a run twice. The runtime
reports the outcome itself (``status.json`` in its output upload, made with the run's own token); until it
does, a run's state follows its dispatched job's allocation. Once a run has finished, its token is refused
and its outputs can no longer change.

The run's token is never in the job or the dispatch (whose ``Meta`` carries only the run id): it is written to
the job's Nomad Variable just before the dispatch, where the run's template finds it by its run id, and taken
out again once the run has finished.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from chutes.scheduler import secret_sync
from chutes.scheduler.deploy import nomad_failure
from chutes.scheduler.errors import SchedulerError, Unavailable
from chutes.scheduler.nomad_api import JobNotFound, NomadError
from chutes.scheduler.render import RUN_ID_META, batch_job_id
from chutes.scheduler.services import Services
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import jobs as jobs_repo
from chutes.scheduler.store.models import Chute, JobRun

log = logging.getLogger(__name__)


def last_task_message(alloc: dict[str, Any]) -> str:
    """The most recent task event's message (why a task failed or restarted)."""
    for state in (alloc.get("TaskStates") or {}).values():
        events = (state or {}).get("Events") or []
        for event in reversed(events):
            text = event.get("DisplayMessage") or event.get("Message") or event.get("Type")
            if text:
                return str(text)
    return ""


async def dispatch_run(services: Services, chute: Chute, run: JobRun) -> JobRun:
    """Dispatch one run (the run id is Nomad's idempotency token: a retry cannot start it twice)."""
    payload = json.dumps(run.input).encode()
    job_id = batch_job_id(chute.id, run.job_name)
    try:
        # The run's token goes to the job's variable first (the run's template waits for nothing else).
        await secret_sync.write_variables(services, chute, only_job=run.job_name)
    except SchedulerError as exc:
        await _fail_run(services, run.id, f"its token could not be stored: {exc.detail}")
        raise
    try:
        result = await services.nomad.dispatch_job(
            job_id, payload, meta={RUN_ID_META: run.id}, idempotency_token=run.id
        )
    except JobNotFound:
        await _fail_run(services, run.id, "the job is not registered in Nomad (yet); retry shortly")
        raise Unavailable(f"job {run.job_name!r} of {chute.name!r} is not registered in Nomad yet",
                          "the reconciler registers it; retry shortly") from None  # fmt: skip
    except NomadError as exc:
        await _fail_run(services, run.id, str(exc))
        raise nomad_failure(exc) from None
    async with services.store.session() as session:
        row = await jobs_repo.get_run(session, run.id)
        assert row is not None
        row.nomad_job_id = result.dispatched_job_id
        jobs_repo.set_status(row, "pending")
    return row


async def _fail_run(services: Services, run_id: str, error: str) -> None:
    async with services.store.session() as session:
        row = await jobs_repo.get_run(session, run_id)
        if row is not None:
            jobs_repo.set_status(row, "failed", error=error)
    if row is not None:
        await forget_token(services, row)


async def forget_token(services: Services, run: JobRun) -> None:
    """Take a finished run's token out of its job's variable (best effort: the token is refused anyway once
    the run has finished, and the next write of that variable leaves it out)."""
    try:
        async with services.store.session() as session:
            chute = await chutes_repo.get_chute(session, run.chute_id)
        if chute is not None and chute.status != "deleting":
            await secret_sync.write_variables(services, chute, only_job=run.job_name)
    except Exception as exc:  # never fails what finished the run
        log.warning("run %s finished; its token stays in its job's variable for now: %s", run.id,
                    getattr(exc, "detail", exc))  # fmt: skip


_RUN_STATES = {"pending": "pending", "running": "running", "complete": "succeeded", "failed": "failed",
               "lost": "lost"}  # fmt: skip


async def refresh_run(services: Services, run: JobRun) -> JobRun:
    """A run's state from its dispatched job's allocation, unless the runtime already reported an outcome."""
    if run.status in jobs_repo.FINAL or not run.nomad_job_id:
        return run
    try:
        allocs = await services.nomad.job_allocations(run.nomad_job_id, all_=True)
    except JobNotFound:
        allocs = None
    except NomadError as exc:
        log.warning("refreshing run %s: %s", run.id, exc)
        return run
    async with services.store.session() as session:
        row = await jobs_repo.get_run(session, run.id)
        if row is None:
            return run
        if allocs is None:
            jobs_repo.set_status(row, "lost", error="its Nomad job is gone")
        elif allocs:
            latest = max(allocs, key=lambda a: a.get("CreateIndex", 0))
            state = _RUN_STATES.get(latest.get("ClientStatus") or "pending", "pending")
            error = None
            if state in ("failed", "lost"):
                error = last_task_message(latest) or f"allocation {state}"
            if state != row.status:
                jobs_repo.set_status(row, state, error=error)
    if row.status in jobs_repo.FINAL:
        await forget_token(services, row)
    return row


async def refresh_unfinished(services: Services) -> None:
    """Refresh every run that has not finished (a reconciler step)."""
    async with services.store.session() as session:
        unfinished = await jobs_repo.list_runs(session, unfinished=True)
    for run in unfinished:
        await refresh_run(services, run)
