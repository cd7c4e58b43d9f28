"""The gateways' utilisation reports: what each gateway has in flight, per chute and instance, for the autoscaler.

Each gateway counts the calls it has in flight on each instance (it balances on them) and the calls it holds
for a chute with no instance yet. It sends a snapshot of these with every invocation batch
(``POST /v1/internal/invocations``, field ``utilisation``), and a batch at least every flush interval even
without invocations, so an idle chute reports zero (docs/api.md, "Invocation batches"). Whichever replica
receives it stores it as that gateway's latest report (table ``gateway_reports``); the leader's autoscaler reads
every report received in the last ``max_age`` seconds and sums them per chute (``aggregate``). A gateway that
stopped reporting drops out once its latest report is older than that.

A gateway id belongs to the API key that reported it: while that report is fresh, a report with the same id
and another key is refused (403), so a gateway cannot overwrite another's report (or zero its load) unless
both hold the same key. A report older than ``max_age`` can be taken over by any gateway key: the gateway that
sent it has stopped, or its key was rotated. Freshness is judged on the scheduler's clock (``received_at``);
times inside a report are on the gateway's clock and are only compared with the report's own ``at``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.scheduler.store import upsert
from chutes.scheduler.store.control_models import GatewayReport

MAX_TIME = 253402300799  # 9999-12-31, as for invocation records
ChuteId = Annotated[str, StringConstraints(min_length=1, max_length=36)]
InstanceKey = Annotated[str, StringConstraints(min_length=1, max_length=256)]


# --- wire models ------------------------------------------------------------------------------------------


class InstanceReport(BaseModel):
    """One instance as one gateway sees it."""

    model_config = ConfigDict(extra="forbid")

    in_flight: int = Field(ge=0, le=1_000_000, description="calls this gateway has in flight on the instance")


class ChuteReport(BaseModel):
    """One chute as one gateway sees it."""

    model_config = ConfigDict(extra="forbid")

    held: int = Field(0, ge=0, le=1_000_000, description="calls held waiting for a first instance")
    completed: int = Field(0, ge=0, le=10**12, description="calls completed since the gateway's previous report")
    last_call_at: float | None = Field(
        None, gt=0, le=MAX_TIME, allow_inf_nan=False, description="when its latest call ended (gateway clock)"
    )
    instances: dict[InstanceKey, InstanceReport] = Field(default_factory=dict, max_length=10_000)


class UtilisationReport(BaseModel):
    """A gateway's snapshot: every chute it routes to (or has just reported calls of)."""

    model_config = ConfigDict(extra="forbid")

    gateway_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")
    at: float = Field(gt=0, le=MAX_TIME, allow_inf_nan=False, description="when it was taken (gateway clock)")
    since: float | None = Field(None, gt=0, le=MAX_TIME, allow_inf_nan=False, description="the previous report's at")
    chutes: dict[ChuteId, ChuteReport] = Field(default_factory=dict, max_length=100_000)


# --- the sum over gateways (pure) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedReport:
    """A stored report and when the scheduler received it (its own clock)."""

    received_at: float
    report: UtilisationReport


@dataclass(slots=True)
class ChuteUsage:
    """One chute summed over the fresh reports of every gateway."""

    in_flight: int = 0
    held: int = 0
    completed: int = 0
    instances: set[str] = field(default_factory=set)  # distinct instances some gateway routes to
    last_call_at: float | None = None  # on the scheduler's clock

    @property
    def demand(self) -> int:
        """Calls in flight or waiting for an instance."""
        return self.in_flight + self.held


@dataclass(frozen=True, slots=True)
class Utilisation:
    """What the gateways reported: per chute, and how many gateways did (0: nothing is known)."""

    chutes: dict[str, ChuteUsage]
    gateways: int

    def of(self, chute_id: str) -> ChuteUsage:
        """A chute's usage; a chute no gateway reported has nothing in flight through any of them."""
        return self.chutes.get(chute_id) or ChuteUsage()


def aggregate(reports: Iterable[ReceivedReport], now: float, max_age: float) -> Utilisation:
    """Sum the reports received within ``max_age`` of ``now``, per chute.

    A report's ``last_call_at`` is moved onto the scheduler's clock by its age within the report
    (``at - last_call_at``), so a gateway whose clock is off does not make a chute look busy or idle.
    """
    chutes: dict[str, ChuteUsage] = {}
    gateways = 0
    for received in reports:
        if now - received.received_at > max_age:
            continue
        gateways += 1
        report = received.report
        for chute_id, seen in report.chutes.items():
            usage = chutes.get(chute_id)
            if usage is None:
                usage = chutes[chute_id] = ChuteUsage()
            usage.held += seen.held
            usage.completed += seen.completed
            for key, instance in seen.instances.items():
                usage.in_flight += instance.in_flight
                usage.instances.add(key)
            if seen.last_call_at is not None:
                ended = received.received_at - max(0.0, report.at - seen.last_call_at)
                usage.last_call_at = ended if usage.last_call_at is None else max(usage.last_call_at, ended)
    return Utilisation(chutes, gateways)


# --- the store --------------------------------------------------------------------------------------------


async def record(session: AsyncSession, key_id: str, report: UtilisationReport, now: float, max_age: float) -> bool:
    """Store ``report`` as its gateway's latest; False (nothing stored) when the gateway id belongs to another
    key whose report is still fresh. One statement: two replicas receiving reports at once cannot interleave."""
    statement = upsert.insert(session, GatewayReport).values(
        gateway_id=report.gateway_id, key_id=key_id, received_at=now, report=report.model_dump(mode="json")
    )
    statement = statement.on_conflict_do_update(
        index_elements=["gateway_id"],
        set_={
            "key_id": statement.excluded.key_id,
            "received_at": statement.excluded.received_at,
            "report": statement.excluded.report,
        },
        where=or_(GatewayReport.key_id == statement.excluded.key_id, GatewayReport.received_at < now - max_age),
    )
    result: Any = await session.execute(statement)
    return bool(result.rowcount)


async def received_since(session: AsyncSession, since: float) -> list[ReceivedReport]:
    """The reports received after ``since``."""
    rows = await session.execute(select(GatewayReport).where(GatewayReport.received_at > since))
    return [ReceivedReport(r.received_at, UtilisationReport.model_validate(r.report)) for r in rows.scalars()]


async def forget_before(session: AsyncSession, before: float) -> None:
    """Delete the reports of gateways silent since ``before`` (a restarted gateway reports under a new id)."""
    await session.execute(delete(GatewayReport).where(GatewayReport.received_at < before))


def retention(max_age: float) -> float:
    """How long a silent gateway's report stays in the store (it no longer counts after ``max_age``)."""
    return max(10 * max_age, 600.0)
