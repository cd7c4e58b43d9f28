"""Job runs (dispatched Nomad batch jobs) and their uploaded outputs."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.scheduler.store.base import now
from chutes.scheduler.store.models import JobOutput, JobRun

FINAL = frozenset({"succeeded", "failed", "lost", "cancelled"})


async def create_run(
    session: AsyncSession, *, chute_id: str, job_name: str, user_id: str, version: str, input: dict[str, Any]
) -> JobRun:
    run = JobRun(chute_id=chute_id, job_name=job_name, user_id=user_id, version=version, input=input)
    session.add(run)
    await session.flush()
    return run


async def get_run(session: AsyncSession, run_id: str) -> JobRun | None:
    return await session.get(JobRun, run_id)


async def list_runs(session: AsyncSession, *, chute_id: str | None = None, unfinished: bool = False) -> list[JobRun]:
    query = select(JobRun)
    if chute_id is not None:
        query = query.where(JobRun.chute_id == chute_id)
    if unfinished:
        query = query.where(JobRun.status.not_in(FINAL))
    return list((await session.execute(query.order_by(JobRun.created_at))).scalars())


def set_status(run: JobRun, status: str, *, error: str | None = None) -> None:
    if run.status in FINAL:
        return  # a finished run keeps its outcome
    run.status = status
    if error is not None:
        run.error = error
    if status in FINAL:
        run.finished_at = now()


async def put_output(session: AsyncSession, run_id: str, name: str, content: bytes) -> JobOutput:
    row = await session.get(JobOutput, (run_id, name))
    digest = hashlib.sha256(content).hexdigest()
    if row is None:
        row = JobOutput(run_id=run_id, name=name, size=len(content), sha256=digest, content=content)
        session.add(row)
    else:
        row.content, row.size, row.sha256 = content, len(content), digest
    await session.flush()
    return row


async def list_outputs(session: AsyncSession, run_id: str) -> list[tuple[str, int, str]]:
    query = select(JobOutput.name, JobOutput.size, JobOutput.sha256).where(JobOutput.run_id == run_id)
    return [(r.name, r.size, r.sha256) for r in (await session.execute(query.order_by(JobOutput.name))).all()]


async def get_output(session: AsyncSession, run_id: str, name: str) -> JobOutput | None:
    return await session.get(JobOutput, (run_id, name))


async def outputs_size(session: AsyncSession, run_id: str) -> int:
    return sum(size for _, size, _ in await list_outputs(session, run_id))
