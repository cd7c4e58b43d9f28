"""The autoscaler: a leader loop that reads each chute's load from the gateways and applies ``autoscale.decide``.

Each tick reads, in one store session, every chute with cords, the gateways' utilisation reports received in
the last ``report_max_age`` seconds (``chutes.scheduler.utilisation``: calls in flight per instance, calls held
for a chute with no instance, when the latest call ended) and how many instances of each chute the scheduler
has recorded as ready. No instance and no Consul query is asked anything: the gateways measure the load as they
route it. One ``LoadSample`` per tick goes into the chute's window (only when some gateway reported: with none,
nothing is known, and nothing is sampled), the pure decision picks the count, and a change goes through
``deploy.set_desired`` (the store, then Nomad's job scale API). A scale-up is limited to what placement can fit
now, so no allocation waits for capacity that does not exist.

Each chute's history (load window, idle clock, last change) is read from the store at the start of a tick
and written back at its end (``autoscaler_state``), so a new leader continues where the last one stopped: a
leader change neither restarts a chute's idle period nor forgets the load that was seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.scheduler import utilisation
from chutes.scheduler.autoscale import AutoscaleParams, ChuteLoad, Decision, LoadSample, ScalingPolicy, decide
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store.control_models import AutoscalerState
from chutes.scheduler.store.models import Chute, Instance

if TYPE_CHECKING:
    from chutes.scheduler.config import SchedulerConfig
    from chutes.scheduler.loops import LeaderLoop
    from chutes.scheduler.services import Services

log = logging.getLogger(__name__)


@dataclass
class ChuteHistory:
    """What the loop remembers about one chute between ticks (stored as JSON between leaders)."""

    samples: deque[LoadSample] = field(default_factory=deque)
    last_desired: int | None = None
    active_since: float | None = None
    last_change_at: float | None = None
    last_request_at: float | None = None  # the latest call seen by any source so far

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": [[s.at, s.in_flight, s.ready] for s in self.samples],
            "last_desired": self.last_desired,
            "active_since": self.active_since,
            "last_change_at": self.last_change_at,
            "last_request_at": self.last_request_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChuteHistory:
        """The stored history; anything unreadable in it is left out (a fresh start beats a crash)."""

        def number(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, int | float) else None

        samples: deque[LoadSample] = deque()
        for item in data.get("samples") or []:
            if isinstance(item, list) and len(item) == 3:
                with contextlib.suppress(TypeError, ValueError):
                    samples.append(LoadSample(float(item[0]), float(item[1]), int(item[2])))
        desired = data.get("last_desired")
        return cls(
            samples=samples,
            last_desired=int(desired) if isinstance(desired, int) else None,
            active_since=number("active_since"),
            last_change_at=number("last_change_at"),
            last_request_at=number("last_request_at"),
        )

    def observe_desired(self, desired: int, now: float) -> None:
        """Track changes made by anyone (deploy, wake, manual scale): a chute just started is not idle.

        The first observation counts as a change too: the count may have just been set (a deploy or a scale
        between two ticks, a new leader) and the scale-down delay must run from here, not be skipped.
        """
        if self.last_desired is None or (self.last_desired == 0 and desired > 0):
            self.active_since = now
        if self.last_desired is None or desired != self.last_desired:
            self.last_change_at = now
        self.last_desired = desired

    def add(self, sample: LoadSample, keep_for: float) -> None:
        self.samples.append(sample)
        while self.samples and self.samples[0].at < sample.at - keep_for:
            self.samples.popleft()


# Seams, so the loop can be driven in a test: how to scale, how much fits.
Scaler = Callable[[Chute, int, str], Awaitable[None]]
Capacity = Callable[[Chute, int], Awaitable[int]]  # how many of ``extra`` more instances can be placed now


class Autoscaler:
    """Reads the gateways' load reports and scales every chute with cords; one ``tick`` per evaluation interval."""

    def __init__(
        self,
        services: Services,
        params: AutoscaleParams,
        *,
        scaler: Scaler | None = None,
        capacity: Capacity | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = services
        self.params = params
        self.scaler = scaler or self._set_desired
        self.capacity = capacity or self._placeable
        self.clock = clock
        self.histories: dict[str, ChuteHistory] = {}
        self.last_decisions: dict[str, Decision] = {}

    async def tick(self) -> None:
        now = self.clock()
        max_age = self.params.report_max_age
        async with self.services.store.session() as session:
            chutes = [c for c in await chutes_repo.list_all(session) if _scalable(c)]
            load = utilisation.aggregate(await utilisation.received_since(session, now - max_age), now, max_age)
            ready = await _ready_counts(session)
            # The store is the memory: whatever another leader (or this one, in an earlier term) recorded.
            stored = await session.execute(select(AutoscalerState))
            self.histories = {row.chute_id: ChuteHistory.from_json(row.state) for row in stored.scalars()}
        for gone in set(self.histories) - {c.id for c in chutes}:
            del self.histories[gone]
        for gone in set(self.last_decisions) - {c.id for c in chutes}:
            del self.last_decisions[gone]
        results = await asyncio.gather(
            *(self._evaluate(chute, now, load, ready.get(chute.id, 0)) for chute in chutes), return_exceptions=True
        )
        await self._save({c.id for c in chutes}, now)
        failed = [(c, r) for c, r in zip(chutes, results, strict=True) if isinstance(r, BaseException)]
        for chute, exc in failed:
            log.error("autoscaler: chute %s (%s): %r", chute.id, chute.name, exc)
        if failed:
            raise RuntimeError(f"autoscaler: {len(failed)} of {len(chutes)} chutes failed (see above)")

    async def _save(self, chute_ids: set[str], now: float) -> None:
        """Write every chute's history back, and forget those of chutes that are gone."""
        async with self.services.store.session() as session:
            await session.execute(delete(AutoscalerState).where(AutoscalerState.chute_id.not_in(chute_ids)))
            await utilisation.forget_before(session, now - utilisation.retention(self.params.report_max_age))
            for chute_id in chute_ids:
                history = self.histories.get(chute_id)
                if history is None:
                    continue
                row = await session.get(AutoscalerState, chute_id)
                if row is None:
                    session.add(AutoscalerState(chute_id=chute_id, state=history.to_json(), updated_at=now))
                else:
                    row.state, row.updated_at = history.to_json(), now

    async def _evaluate(
        self, chute: Chute, now: float, reported: utilisation.Utilisation, recorded_ready: int
    ) -> Decision:
        policy = ScalingPolicy.from_manifest(chute.manifest)
        history = self.histories.setdefault(chute.id, ChuteHistory())
        history.observe_desired(chute.desired_instances, now)
        usage = reported.of(chute.id)
        # Both sources lag (the reconciler's record by its interval, a gateway's table until the chute is called):
        # an instance either one has seen ready is ready.
        ready = max(recorded_ready, len(usage.instances)) if chute.desired_instances > 0 else 0
        if reported.gateways and chute.desired_instances > 0:
            history.add(LoadSample(now, float(usage.demand), ready), self.params.long_window * 2)
        last_call = _latest([history.last_request_at, usage.last_call_at])
        history.last_request_at = last_call
        load = ChuteLoad(
            desired=chute.desired_instances,
            ready=ready,
            samples=tuple(history.samples),
            last_request_at=last_call,
            active_since=history.active_since,
            last_change_at=history.last_change_at,
            held=usage.held,
        )
        decision = decide(policy, load, now, self.params)
        self.last_decisions[chute.id] = decision
        target = decision.target
        if target > chute.desired_instances:
            fits = await self.capacity(chute, target - chute.desired_instances)
            if fits <= 0:
                log.warning("autoscaler: %s wants %d instances but no node can take another", chute.name, target)
                return decision
            target = chute.desired_instances + fits
        if target != chute.desired_instances:
            log.info("autoscaler: %s %d → %d (%s)", chute.name, chute.desired_instances, target, decision.reason)
            await self.scaler(chute, target, f"autoscaler: {decision.reason}")
            history.observe_desired(target, now)
            if target == 0:
                history.samples.clear()
        return decision

    async def _set_desired(self, chute: Chute, count: int, reason: str) -> None:
        from chutes.scheduler import deploy

        await deploy.set_desired(self.services, chute, count, reason)

    async def _placeable(self, chute: Chute, extra: int) -> int:
        from chutes.manifest import Manifest
        from chutes.scheduler import deploy

        # Reserved like a deploy's: a concurrent deploy cannot be promised the GPUs this scale-up counts on.
        placements, _, _ = await deploy.plan_and_reserve(
            self.services, Manifest.model_validate(chute.manifest), extra, purpose="autoscale"
        )
        return min(extra, len(placements))


def _scalable(chute: Chute) -> bool:
    return chute.status != "deleting" and bool(chute.manifest.get("cords"))


async def _ready_counts(session: AsyncSession) -> dict[str, int]:
    """How many instances of each chute the scheduler has recorded as ready (reconciler, deploy watch)."""
    query = select(Instance.chute_id, func.count()).where(Instance.state == "ready").group_by(Instance.chute_id)
    return {chute_id: int(count) for chute_id, count in (await session.execute(query)).all()}


def _latest(times: Iterable[float | None]) -> float | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None


def params_from_config(config: SchedulerConfig) -> AutoscaleParams:
    """The autoscaler's settings (``CHUTES_AUTOSCALE_*``, see ``SchedulerConfig``)."""
    return AutoscaleParams(
        interval=config.autoscale_interval_s,
        long_window=config.autoscale_long_window_s,
        scale_down_delay=config.autoscale_down_delay_s,
        down_ratio=config.autoscale_down_ratio,
        report_max_age=config.autoscale_report_max_age_s,
    )


def leader_loops(services: Services) -> list[LeaderLoop]:
    """The autoscaler loop (settings from ``services.extras['autoscale_params']`` or the configuration)."""
    from chutes.scheduler.loops import LeaderLoop

    params = services.extras.get("autoscale_params") or params_from_config(services.config)
    autoscaler = Autoscaler(services, params)
    services.extras["autoscaler"] = autoscaler
    return [LeaderLoop("autoscaler", params.interval, autoscaler.tick, services.config.loop_max_backoff_s)]
