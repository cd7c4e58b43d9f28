"""Nomad's wire types as the devcluster accepts them (field names and casing exactly as Nomad's JSON).

Every model forbids unknown fields, so a misspelt field is a 400 that names it. Each field exists in the same
schema of Nomad's OpenAPI spec (the tests hold them against it); fields the devcluster accepts but does not act
on are typed loosely and listed in docs/devcluster.md. Durations are integer nanoseconds, as in Nomad.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class NomadModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class Constraint(NomadModel):
    LTarget: str | None = None
    RTarget: str | None = None
    Operand: str | None = None

    def describe(self) -> str:
        """Nomad's ``Constraint.String()``, the key of ``ConstraintFiltered``."""
        return f"{self.LTarget or ''} {self.Operand or ''} {self.RTarget or ''}"


class Affinity(NomadModel):
    LTarget: str | None = None
    RTarget: str | None = None
    Operand: str | None = None
    Weight: int | None = None


class SpreadTarget(NomadModel):
    Value: str | None = None
    Percent: int | None = None


SpreadTargetT = SpreadTarget  # the field named SpreadTarget shadows the class inside models that have one


class Spread(NomadModel):
    Attribute: str | None = None
    Weight: int | None = None
    SpreadTarget: list[SpreadTargetT] | None = None


class RequestedDevice(NomadModel):
    Name: str | None = None
    Count: int | None = None
    Constraints: list[Constraint] | None = None
    Affinities: list[Affinity] | None = None


class DNSConfig(NomadModel):
    Servers: list[str] | None = None
    Searches: list[str] | None = None
    Options: list[str] | None = None


class Port(NomadModel):
    Label: str | None = None
    Value: int | None = None
    To: int | None = None
    HostNetwork: str | None = None
    IgnoreCollision: bool | None = None  # Nomad 1.9+


class NetworkResource(NomadModel):
    Mode: str | None = None
    Device: str | None = None
    CIDR: str | None = None
    IP: str | None = None
    Hostname: str | None = None
    DNS: DNSConfig | None = None
    ReservedPorts: list[Port] | None = None
    DynamicPorts: list[Port] | None = None
    MBits: int | None = None
    CNI: dict[str, Any] | None = None  # Nomad 1.9+


class Resources(NomadModel):
    CPU: int | None = None
    Cores: int | None = None
    MemoryMB: int | None = None
    MemoryMaxMB: int | None = None
    DiskMB: int | None = None
    IOPS: int | None = None
    Networks: list[NetworkResource] | None = None
    Devices: list[RequestedDevice] | None = None
    NUMA: dict[str, Any] | None = None  # Nomad 1.7+
    SecretsMB: int | None = None  # Nomad 1.9+


ResourcesT = Resources  # the field named Resources shadows the class inside models that have one


class RestartPolicy(NomadModel):
    Attempts: int | None = None
    Interval: int | None = None
    Delay: int | None = None
    Mode: str | None = None
    RenderTemplates: bool | None = None  # Nomad 1.7+


RestartPolicyT = RestartPolicy  # the field named RestartPolicy shadows the class inside models that have one


class ReschedulePolicy(NomadModel):
    Attempts: int | None = None
    Interval: int | None = None
    Delay: int | None = None
    DelayFunction: str | None = None
    MaxDelay: int | None = None
    Unlimited: bool | None = None


ReschedulePolicyT = ReschedulePolicy  # the field named ReschedulePolicy shadows the class inside models that have one


class CheckRestart(NomadModel):
    Limit: int | None = None
    Grace: int | None = None
    IgnoreWarnings: bool | None = None


CheckRestartT = CheckRestart  # the field named CheckRestart shadows the class inside models that have one


class ServiceCheck(NomadModel):
    Name: str | None = None
    Type: str | None = None
    Command: str | None = None
    Args: list[str] | None = None
    Path: str | None = None
    Protocol: str | None = None
    PortLabel: str | None = None
    Expose: bool | None = None
    AddressMode: str | None = None
    Advertise: str | None = None
    Interval: int | None = None
    Timeout: int | None = None
    InitialStatus: str | None = None
    TLSSkipVerify: bool | None = None
    Header: dict[str, list[str]] | None = None
    Method: str | None = None
    CheckRestart: CheckRestartT | None = None
    GRPCService: str | None = None
    GRPCUseTLS: bool | None = None
    TaskName: str | None = None
    SuccessBeforePassing: int | None = None
    FailuresBeforeCritical: int | None = None
    Body: str | None = None
    OnUpdate: str | None = None
    TLSServerName: str | None = None  # Nomad 1.6+
    FailuresBeforeWarning: int | None = None  # Nomad 1.8+
    Notes: str | None = None  # Nomad 1.9+


class WorkloadIdentity(NomadModel):
    """A task's or service's ``identity`` block (Nomad 1.5+): a signed JWT Nomad hands the workload."""

    Name: str | None = None
    Audience: list[str] | None = None
    ChangeMode: str | None = None
    ChangeSignal: str | None = None
    Env: bool | None = None
    File: bool | None = None
    Filepath: str | None = None
    ServiceName: str | None = None
    TTL: int | None = None
    ExtraClaims: dict[str, str] | None = None


WorkloadIdentityT = WorkloadIdentity  # the field named Identity shadows the class inside models that have one


class Service(NomadModel):
    Name: str | None = None
    Tags: list[str] | None = None
    CanaryTags: list[str] | None = None
    EnableTagOverride: bool | None = None
    PortLabel: str | None = None
    AddressMode: str | None = None
    Address: str | None = None
    Checks: list[ServiceCheck] | None = None
    CheckRestart: CheckRestartT | None = None
    Connect: dict[str, Any] | None = None
    Meta: dict[str, str] | None = None
    CanaryMeta: dict[str, str] | None = None
    TaggedAddresses: dict[str, str] | None = None
    TaskName: str | None = None
    OnUpdate: str | None = None
    Provider: str | None = None
    Cluster: str | None = None  # Nomad 1.7+
    Identity: WorkloadIdentityT | None = None  # Nomad 1.7+
    Kind: str | None = None  # Nomad 1.11+
    Weights: dict[str, int] | None = None  # Nomad 1.10+


class ScalingPolicy(NomadModel):
    ID: str | None = None
    Namespace: str | None = None
    Type: str | None = None
    Target: dict[str, str] | None = None
    Min: int | None = None
    Max: int | None = None
    Policy: dict[str, Any] | None = None
    Enabled: bool | None = None
    CreateIndex: int | None = None
    ModifyIndex: int | None = None


class LogConfig(NomadModel):
    MaxFiles: int | None = None
    MaxFileSizeMB: int | None = None
    Disabled: bool | None = None  # Nomad 1.6+
    Enabled: bool | None = None  # Nomad 1.6+


LogConfigT = LogConfig  # the field named LogConfig shadows the class inside models that have one


class EphemeralDisk(NomadModel):
    Sticky: bool | None = None
    Migrate: bool | None = None
    SizeMB: int | None = None


EphemeralDiskT = EphemeralDisk  # the field named EphemeralDisk shadows the class inside models that have one


class UpdateStrategy(NomadModel):
    Stagger: int | None = None
    MaxParallel: int | None = None
    HealthCheck: str | None = None
    MinHealthyTime: int | None = None
    HealthyDeadline: int | None = None
    ProgressDeadline: int | None = None
    Canary: int | None = None
    AutoRevert: bool | None = None
    AutoPromote: bool | None = None


class MigrateStrategy(NomadModel):
    MaxParallel: int | None = None
    HealthCheck: str | None = None
    MinHealthyTime: int | None = None
    HealthyDeadline: int | None = None


class PeriodicConfig(NomadModel):
    Enabled: bool | None = None
    Spec: str | None = None
    SpecType: str | None = None
    ProhibitOverlap: bool | None = None
    TimeZone: str | None = None
    Specs: list[str] | None = None  # Nomad 1.7+


class ParameterizedJobConfig(NomadModel):
    Payload: str | None = None
    MetaRequired: list[str] | None = None
    MetaOptional: list[str] | None = None


class DispatchPayloadConfig(NomadModel):
    File: str | None = None


class TaskLifecycle(NomadModel):
    Hook: str | None = None
    Sidecar: bool | None = None


class Template(NomadModel):
    """A ``template`` block; docs/devcluster.md says which parts the devcluster renders."""

    SourcePath: str | None = None
    DestPath: str | None = None
    EmbeddedTmpl: str | None = None
    ChangeMode: str | None = None
    ChangeScript: dict[str, Any] | None = None
    ChangeSignal: str | None = None
    Splay: int | None = None
    Perms: str | None = None
    Uid: int | None = None
    Gid: int | None = None
    LeftDelim: str | None = None
    RightDelim: str | None = None
    Envvars: bool | None = None
    VaultGrace: int | None = None
    Wait: dict[str, Any] | None = None
    ErrMissingKey: bool | None = None  # Nomad 1.5+
    Once: bool | None = None  # Nomad 1.11+


class Task(NomadModel):
    Name: str | None = None
    Driver: str | None = None
    User: str | None = None
    Lifecycle: TaskLifecycle | None = None
    Config: dict[str, Any] | None = None
    Constraints: list[Constraint] | None = None
    Affinities: list[Affinity] | None = None
    Env: dict[str, str] | None = None
    Services: list[Service] | None = None
    Resources: ResourcesT | None = None
    RestartPolicy: RestartPolicyT | None = None
    Meta: dict[str, str] | None = None
    KillTimeout: int | None = None
    LogConfig: LogConfigT | None = None
    Artifacts: list[dict[str, Any]] | None = None
    Vault: dict[str, Any] | None = None
    Templates: list[Template] | None = None
    DispatchPayload: DispatchPayloadConfig | None = None
    VolumeMounts: list[dict[str, Any]] | None = None
    CSIPluginConfig: dict[str, Any] | None = None
    Leader: bool | None = None
    ShutdownDelay: int | None = None
    KillSignal: str | None = None
    Kind: str | None = None
    ScalingPolicies: list[ScalingPolicy] | None = None
    Identity: WorkloadIdentityT | None = None  # Nomad 1.5+
    Identities: list[WorkloadIdentityT] | None = None  # Nomad 1.7+
    Actions: list[dict[str, Any]] | None = None  # Nomad 1.7+
    Consul: dict[str, Any] | None = None  # Nomad 1.7+
    Schedule: dict[str, Any] | None = None  # Nomad 1.8+ (Enterprise)
    Secrets: list[dict[str, Any]] | None = None  # Nomad 1.11+


class TaskGroup(NomadModel):
    Name: str | None = None
    Count: int | None = None
    Constraints: list[Constraint] | None = None
    Affinities: list[Affinity] | None = None
    Tasks: list[Task] | None = None
    Spreads: list[Spread] | None = None
    Volumes: dict[str, Any] | None = None
    RestartPolicy: RestartPolicyT | None = None
    ReschedulePolicy: ReschedulePolicyT | None = None
    EphemeralDisk: EphemeralDiskT | None = None
    Update: UpdateStrategy | None = None
    Migrate: MigrateStrategy | None = None
    Networks: list[NetworkResource] | None = None
    Meta: dict[str, str] | None = None
    Services: list[Service] | None = None
    ShutdownDelay: int | None = None
    StopAfterClientDisconnect: int | None = None
    MaxClientDisconnect: int | None = None
    Scaling: ScalingPolicy | None = None
    Consul: dict[str, Any] | None = None
    Disconnect: dict[str, Any] | None = None  # Nomad 1.8+
    PreventRescheduleOnLost: bool | None = None  # Nomad 1.8+
    MaxRunDuration: int | None = None  # Nomad 2.0.6+


class Job(NomadModel):
    Region: str | None = None
    Namespace: str | None = None
    ID: str | None = None
    Name: str | None = None
    Type: str | None = None
    Priority: int | None = None
    AllAtOnce: bool | None = None
    Datacenters: list[str] | None = None
    NodePool: str | None = None  # Nomad 1.6+
    Constraints: list[Constraint] | None = None
    Affinities: list[Affinity] | None = None
    TaskGroups: list[TaskGroup] | None = None
    Update: UpdateStrategy | None = None
    Multiregion: dict[str, Any] | None = None
    Spreads: list[Spread] | None = None
    Periodic: PeriodicConfig | None = None
    ParameterizedJob: ParameterizedJobConfig | None = None
    Reschedule: ReschedulePolicy | None = None
    Migrate: MigrateStrategy | None = None
    Meta: dict[str, str] | None = None
    ConsulToken: str | None = None
    VaultToken: str | None = None
    VaultNamespace: str | None = None
    NomadTokenID: str | None = None
    ConsulNamespace: str | None = None
    Stop: bool | None = None
    ParentID: str | None = None
    Dispatched: bool | None = None
    DispatchIdempotencyToken: str | None = None
    Payload: str | None = None
    Status: str | None = None
    StatusDescription: str | None = None
    Stable: bool | None = None
    Version: int | None = None
    SubmitTime: int | None = None
    CreateIndex: int | None = None
    ModifyIndex: int | None = None
    JobModifyIndex: int | None = None
    UI: dict[str, Any] | None = None  # Nomad 1.8+
    VersionTag: dict[str, Any] | None = None  # Nomad 1.9+


JobT = Job  # the field named Job shadows the class inside models that have one


class JobRegisterRequest(NomadModel):
    Job: JobT | None = None
    EnforceIndex: bool | None = None
    JobModifyIndex: int | None = None
    PolicyOverride: bool | None = None
    PreserveCounts: bool | None = None
    EvalPriority: int | None = None
    PreserveResources: bool | None = None  # Nomad 1.11+
    Submission: dict[str, Any] | None = None  # Nomad 1.6+ (the HCL source, kept by Nomad for the UI)
    Namespace: str | None = None
    Region: str | None = None
    SecretID: str | None = None


class JobPlanRequest(NomadModel):
    Job: JobT | None = None
    Diff: bool | None = None
    PolicyOverride: bool | None = None
    Namespace: str | None = None
    Region: str | None = None
    SecretID: str | None = None


class ScalingRequest(NomadModel):
    Count: int | None = None
    Target: dict[str, str] | None = None
    Message: str | None = None
    Error: bool | None = None
    Meta: dict[str, Any] | None = None
    PolicyOverride: bool | None = None
    Namespace: str | None = None
    Region: str | None = None
    SecretID: str | None = None


class JobDispatchRequest(NomadModel):
    JobID: str | None = None
    Payload: str | None = None
    Meta: dict[str, str] | None = None
    # Newer than the spec in reference/: python-nomad 2.x sends both (idempotency_token in the body, where
    # Nomad ignores it; the devcluster honours it like the ?idempotency_token= query parameter).
    IdPrefixTemplate: str | None = None
    idempotency_token: str | None = None


class NodeMetaApplyRequest(NomadModel):
    """``POST /v1/client/metadata`` (Nomad 1.5+; not in the spec in reference/)."""

    NodeID: str | None = None
    Meta: dict[str, str | None] | None = None


# Models whose fields the tests hold against the spec's schema of the same name, and the fields each may carry
# beyond it: the spec in reference/ predates Nomad 1.5, so these are the later additions (facts-2 §7 lists them
# per version, up to Nomad 2.0).
SPEC_SCHEMAS: dict[type[NomadModel], tuple[str, frozenset[str]]] = {
    Constraint: ("Constraint", frozenset()),
    Affinity: ("Affinity", frozenset()),
    Spread: ("Spread", frozenset()),
    SpreadTarget: ("SpreadTarget", frozenset()),
    RequestedDevice: ("RequestedDevice", frozenset()),
    DNSConfig: ("DNSConfig", frozenset()),
    Port: ("Port", frozenset({"IgnoreCollision"})),
    NetworkResource: ("NetworkResource", frozenset({"CNI"})),
    Resources: ("Resources", frozenset({"NUMA", "SecretsMB"})),
    RestartPolicy: ("RestartPolicy", frozenset({"RenderTemplates"})),
    ReschedulePolicy: ("ReschedulePolicy", frozenset()),
    CheckRestart: ("CheckRestart", frozenset()),
    ServiceCheck: ("ServiceCheck", frozenset({"TLSServerName", "FailuresBeforeWarning", "Notes"})),
    Service: ("Service", frozenset({"Cluster", "Identity", "Kind", "Weights"})),
    ScalingPolicy: ("ScalingPolicy", frozenset()),
    LogConfig: ("LogConfig", frozenset({"Disabled", "Enabled"})),
    EphemeralDisk: ("EphemeralDisk", frozenset()),
    UpdateStrategy: ("UpdateStrategy", frozenset()),
    MigrateStrategy: ("MigrateStrategy", frozenset()),
    PeriodicConfig: ("PeriodicConfig", frozenset({"Specs"})),
    ParameterizedJobConfig: ("ParameterizedJobConfig", frozenset()),
    DispatchPayloadConfig: ("DispatchPayloadConfig", frozenset()),
    TaskLifecycle: ("TaskLifecycle", frozenset()),
    Template: ("Template", frozenset({"ErrMissingKey", "Once"})),
    Task: ("Task", frozenset({"Identity", "Identities", "Actions", "Consul", "Schedule", "Secrets"})),
    TaskGroup: ("TaskGroup", frozenset({"Disconnect", "PreventRescheduleOnLost", "MaxRunDuration"})),
    Job: ("Job", frozenset({"NodePool", "UI", "VersionTag"})),
    JobRegisterRequest: ("JobRegisterRequest", frozenset({"PreserveResources", "Submission"})),
    ScalingRequest: ("ScalingRequest", frozenset()),
    JobPlanRequest: ("JobPlanRequest", frozenset()),
    JobDispatchRequest: ("JobDispatchRequest", frozenset({"IdPrefixTemplate", "idempotency_token"})),
}
