"""``POST /v1/job/:id/plan``: the scheduler run on a scratch copy of the state, nothing applied."""

from __future__ import annotations

from typing import Any

from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.canonical import canonicalize
from chutes.devcluster.nomad.records import Allocation
from chutes.devcluster.nomad.scheduler import Scheduler, group_hash
from chutes.devcluster.nomad.state import NomadState
from chutes.devcluster.state.index import IndexStore


def plan_job(state: NomadState, job: models.Job) -> dict[str, Any]:
    """What registering ``job`` would do now: placements, stops, updates, and why anything would not fit."""
    job = canonicalize(job)
    assert job.ID is not None
    scratch = NomadState(IndexStore(state.index.index))
    scratch.nodes = state.nodes
    scratch.jobs = {k: v.model_copy(deep=True) for k, v in state.jobs.items()}
    scratch.allocs = {k: Allocation.model_validate(v.model_dump()) for k, v in state.allocs.items()}
    old = scratch.jobs.get(job.ID)
    job.Version = (old.Version or 0) + 1 if old is not None else 0
    scratch.jobs[job.ID] = job
    scheduler = Scheduler(scratch, lambda: 0)
    evaluation = scheduler.new_eval(job.ID, "job-register")
    result = scheduler.evaluate(evaluation)
    job_json = job.model_dump(mode="json")
    updates: dict[str, dict[str, int]] = {}
    for group in job.TaskGroups or []:
        name = group.Name or ""
        live = [a for a in state.job_allocs(job.ID) if a.task_group == name and not a.terminal]
        destructive = sum(1 for a in live if group_hash(a.job, name) != group_hash(job_json, name))
        placed = sum(1 for a in result.placed if a.task_group == name)
        stopped = sum(1 for a in result.stopped if a.task_group == name)
        stop = max(0, stopped - destructive)
        updates[name] = {
            "Place": max(0, placed - destructive),
            "Stop": stop,
            "Migrate": 0,
            "InPlaceUpdate": max(0, len(live) - destructive - stop),
            "DestructiveUpdate": destructive,
            "Ignore": 0,
            "Canary": 0,
            "Preemptions": 0,
        }
    return {
        "Index": state.index.index,
        "JobModifyIndex": old.JobModifyIndex if old is not None else 0,
        "Annotations": {"DesiredTGUpdates": updates, "PreemptedAllocs": None},
        "FailedTGAllocs": evaluation.failed_tg_allocs or None,
        "CreatedEvals": None,
        "Diff": None,
        "NextPeriodicLaunch": "0001-01-01T00:00:00Z",
        "Warnings": "",
    }
