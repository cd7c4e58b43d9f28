"""Allocations and evaluations as the devcluster keeps them, and their Nomad JSON renderings."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

ALLOC_TERMINAL = frozenset({"complete", "failed", "lost"})


def now_ns() -> int:
    return time.time_ns()


def rfc3339(ns: int | None) -> str:
    if not ns:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


class TaskEvent(BaseModel):
    type: str
    time_ns: int = Field(default_factory=now_ns)
    message: str = ""
    details: dict[str, str] = Field(default_factory=dict)
    exit_code: int = 0
    signal: int = 0
    failed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "Type": self.type,
            "Time": self.time_ns,
            "Message": self.message,
            "DisplayMessage": self.message or self.type,
            "Details": dict(self.details),
            "FailsTask": self.failed,
            "RestartReason": self.details.get("restart_reason", ""),
            "ExitCode": self.exit_code,
            "Signal": self.signal,
            "KillTimeout": 0,
            "KillError": "",
            "KillReason": self.details.get("kill_reason", ""),
            "DriverError": self.details.get("driver_error", ""),
            "DriverMessage": "",
            "TaskSignal": "",
            "TaskSignalReason": "",
            "ValidationError": "",
            "SetupError": self.details.get("setup_error", ""),
            "DownloadError": "",
            "StartDelay": int(self.details.get("start_delay", "0")),
            "DiskLimit": 0,
            "FailedSibling": "",
            "VaultError": "",
            "GenericSource": "",
        }


class TaskState(BaseModel):
    state: str = "pending"
    failed: bool = False
    restarts: int = 0
    last_restart_ns: int = 0
    started_ns: int = 0
    finished_ns: int = 0
    events: list[TaskEvent] = Field(default_factory=list)

    def event(self, event: TaskEvent) -> None:
        self.events.append(event)
        del self.events[:-10]  # Nomad keeps the last 10 events per task

    def to_json(self) -> dict[str, Any]:
        return {
            "State": self.state,
            "Failed": self.failed,
            "Restarts": self.restarts,
            "LastRestart": rfc3339(self.last_restart_ns) if self.last_restart_ns else None,
            "StartedAt": rfc3339(self.started_ns) if self.started_ns else None,
            "FinishedAt": rfc3339(self.finished_ns) if self.finished_ns else None,
            "Events": [e.to_json() for e in self.events],
            "TaskHandle": None,
        }


class Allocation(BaseModel):
    id: str
    eval_id: str
    name: str
    index: int
    node_id: str
    node_name: str
    job_id: str
    job: dict[str, Any]
    task_group: str
    desired_status: str = "run"
    desired_description: str = ""
    client_status: str = "pending"
    client_description: str = ""
    task_states: dict[str, TaskState] = Field(default_factory=dict)
    devices: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    ports: list[dict[str, Any]] = Field(default_factory=list)
    task_cpu: dict[str, int] = Field(default_factory=dict)
    task_memory: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    previous_allocation: str = ""
    next_allocation: str = ""
    followup_eval_id: str = ""
    reschedule_events: list[dict[str, Any]] = Field(default_factory=list)
    create_index: int = 0
    modify_index: int = 0
    alloc_modify_index: int = 0
    create_time: int = Field(default_factory=now_ns)
    modify_time: int = Field(default_factory=now_ns)
    deployment_id: str = ""
    deployment_healthy: bool | None = None  # Nomad's DeploymentStatus.Healthy: null until decided
    deployment_timestamp: int = 0
    deployment_modify_index: int = 0
    healthy_since: int = 0  # when its health condition began to hold (min_healthy_time counts from here)
    migrate: bool = False  # DesiredTransition.Migrate: a drain asked for it to move

    @property
    def terminal(self) -> bool:
        return self.client_status in ALLOC_TERMINAL

    def deployment_status(self) -> dict[str, Any] | None:
        if not self.deployment_id:
            return None
        return {
            "Healthy": self.deployment_healthy,
            "Timestamp": rfc3339(self.deployment_timestamp) if self.deployment_timestamp else "0001-01-01T00:00:00Z",
            "Canary": False,
            "ModifyIndex": self.deployment_modify_index,
        }

    @property
    def live(self) -> bool:
        """Holds resources on its node: not yet terminal on the client."""
        return not self.terminal

    @property
    def job_version(self) -> int:
        return int(self.job.get("Version") or 0)

    def allocated_resources(self) -> dict[str, Any]:
        tasks = {
            task: {
                "Cpu": {"CpuShares": self.task_cpu.get(task, 0), "ReservedCores": None},
                "Memory": {"MemoryMB": self.task_memory.get(task, 0), "MemoryMaxMB": 0},
                "Networks": None,
                "Devices": self.devices.get(task) or None,
            }
            for task in self.task_states
        }
        return {
            "Tasks": tasks,
            "TaskLifecycles": {task: None for task in self.task_states},
            "Shared": {
                "DiskMB": 300,
                "Networks": [
                    {
                        "Mode": "host",
                        "IP": "127.0.0.1",
                        "DynamicPorts": [
                            {"Label": p["Label"], "Value": p["Value"], "To": p["To"], "HostNetwork": "default"}
                            for p in self.ports
                            if p.get("Dynamic", True)
                        ]
                        or None,
                        "ReservedPorts": [
                            {"Label": p["Label"], "Value": p["Value"], "To": p["To"], "HostNetwork": "default"}
                            for p in self.ports
                            if not p.get("Dynamic", True)
                        ]
                        or None,
                    }
                ],
                "Ports": [
                    {"Label": p["Label"], "Value": p["Value"], "To": p["To"], "HostIP": "127.0.0.1"} for p in self.ports
                ]
                or None,
            },
        }

    def stub_json(self, resources: bool = False, task_states: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ID": self.id,
            "EvalID": self.eval_id,
            "Name": self.name,
            "Namespace": "default",
            "NodeID": self.node_id,
            "NodeName": self.node_name,
            "JobID": self.job_id,
            "JobType": self.job.get("Type"),
            "JobVersion": self.job_version,
            "TaskGroup": self.task_group,
            "DesiredStatus": self.desired_status,
            "DesiredDescription": self.desired_description,
            "ClientStatus": self.client_status,
            "ClientDescription": self.client_description,
            "DesiredTransition": {
                "Migrate": True if self.migrate else None,
                "Reschedule": None,
                "ForceReschedule": None,
            },
            "TaskStates": {k: v.to_json() for k, v in self.task_states.items()} if task_states else None,
            "DeploymentStatus": self.deployment_status(),
            "FollowupEvalID": self.followup_eval_id,
            "NextAllocation": self.next_allocation,
            "PreviousAllocation": self.previous_allocation,
            "RescheduleTracker": {"Events": self.reschedule_events} if self.reschedule_events else None,
            "PreemptedAllocations": None,
            "PreemptedByAllocation": "",
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "CreateTime": self.create_time,
            "ModifyTime": self.modify_time,
        }
        if resources:
            out["AllocatedResources"] = self.allocated_resources()
        return out

    def full_json(self) -> dict[str, Any]:
        out = self.stub_json(resources=True)
        out.pop("JobType", None)
        out.pop("JobVersion", None)
        out.update(
            {
                "Job": self.job,
                "Resources": None,
                "TaskResources": None,
                "Metrics": self.metrics or None,
                "AllocModifyIndex": self.alloc_modify_index,
                "DeploymentID": self.deployment_id,
                "NetworkStatus": {"InterfaceName": "", "Address": "127.0.0.1", "DNS": None},
            }
        )
        return out


class Evaluation(BaseModel):
    id: str
    job_id: str
    type: str
    triggered_by: str
    priority: int = 50
    job_modify_index: int = 0
    node_id: str = ""
    status: str = "pending"
    status_description: str = ""
    failed_tg_allocs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    queued_allocations: dict[str, int] = Field(default_factory=dict)
    blocked_eval: str = ""
    previous_eval: str = ""
    next_eval: str = ""
    create_index: int = 0
    modify_index: int = 0
    create_time: int = Field(default_factory=now_ns)
    modify_time: int = Field(default_factory=now_ns)

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Namespace": "default",
            "Priority": self.priority,
            "Type": self.type,
            "TriggeredBy": self.triggered_by,
            "JobID": self.job_id,
            "JobModifyIndex": self.job_modify_index,
            "NodeID": self.node_id,
            "NodeModifyIndex": 0,
            "DeploymentID": "",
            "Status": self.status,
            "StatusDescription": self.status_description,
            "Wait": 0,
            "WaitUntil": "0001-01-01T00:00:00Z",
            "NextEval": self.next_eval,
            "PreviousEval": self.previous_eval,
            "BlockedEval": self.blocked_eval,
            "RelatedEvals": None,
            "FailedTGAllocs": self.failed_tg_allocs or None,
            "ClassEligibility": None,
            "EscapedComputedClass": False,
            "QuotaLimitReached": "",
            "AnnotatePlan": False,
            "QueuedAllocations": dict(self.queued_allocations),
            "SnapshotIndex": self.create_index,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "CreateTime": self.create_time,
            "ModifyTime": self.modify_time,
        }

    def stub_json(self) -> dict[str, Any]:
        full = self.to_json()
        keep = (
            "ID", "Namespace", "Priority", "Type", "TriggeredBy", "JobID", "NodeID", "DeploymentID", "Status",
            "StatusDescription", "WaitUntil", "NextEval", "PreviousEval", "BlockedEval", "CreateIndex",
            "ModifyIndex", "CreateTime", "ModifyTime",
        )  # fmt: skip
        return {k: full[k] for k in keep}


DEPLOYMENT_ACTIVE = ("running", "paused", "pending", "blocked", "unblocking", "initializing")


class DeploymentGroup(BaseModel):
    """One task group's ``DeploymentState``."""

    auto_revert: bool = False
    auto_promote: bool = False
    progress_deadline: int = 0
    require_progress_by: int = 0
    desired_total: int = 0
    placed_allocs: int = 0
    healthy_allocs: int = 0
    unhealthy_allocs: int = 0
    max_parallel: int = 1
    health_check: str = "checks"
    min_healthy_time: int = 0
    healthy_deadline: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "AutoRevert": self.auto_revert,
            "AutoPromote": self.auto_promote,
            "ProgressDeadline": self.progress_deadline,
            "RequireProgressBy": rfc3339(self.require_progress_by)
            if self.require_progress_by
            else "0001-01-01T00:00:00Z",
            "Promoted": False,
            "PlacedCanaries": None,
            "DesiredCanaries": 0,
            "DesiredTotal": self.desired_total,
            "PlacedAllocs": self.placed_allocs,
            "HealthyAllocs": self.healthy_allocs,
            "UnhealthyAllocs": self.unhealthy_allocs,
        }


class Deployment(BaseModel):
    """A rollout of one job version (Nomad's ``structs.Deployment``)."""

    id: str
    job_id: str
    job_version: int
    job_modify_index: int = 0
    job_create_index: int = 0
    status: str = "running"
    status_description: str = "Deployment is running"
    groups: dict[str, DeploymentGroup] = Field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0
    create_time: int = Field(default_factory=now_ns)
    modify_time: int = Field(default_factory=now_ns)

    @property
    def active(self) -> bool:
        return self.status in DEPLOYMENT_ACTIVE

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Namespace": "default",
            "JobID": self.job_id,
            "JobVersion": self.job_version,
            "JobModifyIndex": self.job_modify_index,
            "JobSpecModifyIndex": self.job_modify_index,
            "JobCreateIndex": self.job_create_index,
            "IsMultiregion": False,
            "TaskGroups": {name: g.to_json() for name, g in self.groups.items()},
            "Status": self.status,
            "StatusDescription": self.status_description,
            "EvalPriority": 50,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "CreateTime": self.create_time,
            "ModifyTime": self.modify_time,
        }
