"""The autoscaler: a leader loop that samples each chute's load and applies ``autoscale.decide``.

Each tick, for every chute with cords: its passing instances come from Consul, each instance's
``/_metrics`` gives its calls in flight (``chutes_in_flight``) and its latest call
(``chutes_last_request_timestamp_seconds``); the gateways' invocation reports give the latest call too (they
see calls that never reached an instance). One ``LoadSample`` per tick goes into the chute's window, the pure
decision picks the count, and a change goes through ``deploy.set_desired`` (the store, then Nomad's job
scale API). A scale-up is limited to what placement can fit now, so no allocation waits for capacity that
does not exist.

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

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select

from chutes.core import health
from chutes.core.registrations import AllocView, verify
from chutes.scheduler import metering
from chutes.scheduler.autoscale import AutoscaleParams, ChuteLoad, Decision, LoadSample, ScalingPolicy, decide
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store.control_models import AutoscalerState
from chutes.scheduler.store.models import Chute

if TYPE_CHECKING:
    from chutes.scheduler.config import SchedulerConfig
    from chutes.scheduler.loops import LeaderLoop
    from chutes.scheduler.services import Services

log = logging.getLogger(__name__)

METRICS_TIMEOUT_S = 2.0
MAX_PARALLEL_SCRAPES = 32


@dataclass(frozen=True, slots=True)
class InstanceLoad:
    in_flight: float
    last_request_at: float | None


def parse_instance_metrics(text: str) -> InstanceLoad:
    """Calls in flight and the latest call time from an instance's Prometheus text."""
    in_flight = 0.0
    last: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "chutes_in_flight":
                in_flight += float(sample.value)
            elif sample.name == "chutes_last_request_timestamp_seconds" and sample.value > 0:
                last = max(last or 0.0, float(sample.value))
    return InstanceLoad(in_flight, last)


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


# Seams, so the loop can be driven in a test: where instances are, how to scale, how much fits.
Endpoints = Callable[[str], Awaitable[list[str]]]  # chute id -> base URLs of its passing instances
Scaler = Callable[[Chute, int, str], Awaitable[None]]
Capacity = Callable[[Chute, int], Awaitable[int]]  # how many of ``extra`` more instances can be placed now


class Autoscaler:
    """Samples load and scales every chute with cords; one ``tick`` per evaluation interval."""

    def __init__(
        self,
        services: Services,
        params: AutoscaleParams,
        *,
        endpoints: Endpoints | None = None,
        scaler: Scaler | None = None,
        capacity: Capacity | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = services
        self.params = params
        self.endpoints = endpoints or self._consul_endpoints
        self.scaler = scaler or self._set_desired
        self.capacity = capacity or self._placeable
        self.clock = clock
        self.histories: dict[str, ChuteHistory] = {}
        self.last_decisions: dict[str, Decision] = {}

    async def tick(self) -> None:
        now = self.clock()
        async with self.services.store.session() as session:
            chutes = [c for c in await chutes_repo.list_all(session) if _scalable(c)]
            lookback = max((float(c.manifest.get("shutdown_after_seconds", 300)) for c in chutes), default=0.0)
            gateway_calls = await metering.last_calls(session, now - lookback - self.params.long_window)
            # The store is the memory: whatever another leader (or this one, in an earlier term) recorded.
            stored = await session.execute(select(AutoscalerState))
            self.histories = {row.chute_id: ChuteHistory.from_json(row.state) for row in stored.scalars()}
        for gone in set(self.histories) - {c.id for c in chutes}:
            del self.histories[gone]
        for gone in set(self.last_decisions) - {c.id for c in chutes}:
            del self.last_decisions[gone]
        semaphore = asyncio.Semaphore(MAX_PARALLEL_SCRAPES)
        timeout = aiohttp.ClientTimeout(total=METRICS_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            results = await asyncio.gather(
                *(self._evaluate(chute, now, gateway_calls.get(chute.id), http, semaphore) for chute in chutes),
                return_exceptions=True,
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
        self,
        chute: Chute,
        now: float,
        gateway_last_call: float | None,
        http: aiohttp.ClientSession,
        semaphore: asyncio.Semaphore,
    ) -> Decision:
        policy = ScalingPolicy.from_manifest(chute.manifest)
        history = self.histories.setdefault(chute.id, ChuteHistory())
        history.observe_desired(chute.desired_instances, now)
        urls = await self.endpoints(chute.id) if chute.desired_instances > 0 else []
        loads = await asyncio.gather(*(self._scrape(http, url, semaphore) for url in urls))
        read = [load for load in loads if load is not None]
        if read:
            history.add(LoadSample(now, sum(x.in_flight for x in read), len(read)), self.params.long_window * 2)
        last_call = _latest([history.last_request_at, gateway_last_call, *(x.last_request_at for x in read)])
        history.last_request_at = last_call
        load = ChuteLoad(
            desired=chute.desired_instances,
            ready=len(urls),
            samples=tuple(history.samples),
            last_request_at=last_call,
            active_since=history.active_since,
            last_change_at=history.last_change_at,
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

    async def _scrape(self, http: aiohttp.ClientSession, url: str, semaphore: asyncio.Semaphore) -> InstanceLoad | None:
        async with semaphore:
            try:
                async with http.get(f"{url}/_metrics") as resp:
                    if resp.status != 200:
                        return None
                    return parse_instance_metrics(await resp.text())
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.debug("autoscaler: cannot read %s/_metrics: %r", url, exc)
                return None

    async def _consul_endpoints(self, chute_id: str) -> list[str]:
        from chutes.scheduler.deploy import service_name

        name = service_name(chute_id)
        _, entries = await self.services.consul.health.service(name, passing=True)
        found = health.instances(entries)
        if not found:
            return []
        # Only instances Nomad runs: a registration anyone could make must not steer the scale (or the bill).
        allocs = await self.services.nomad.allocations(filter_=f'JobID == "{name}"', resources=True)
        kept, _ = verify(name, found, {str(a["ID"]): AllocView.of(a) for a in allocs})
        return [f"http://{f'[{host}]' if ':' in host else host}:{port}" for _, host, port in kept]

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
    )


def leader_loops(services: Services) -> list[LeaderLoop]:
    """The autoscaler loop (settings from ``services.extras['autoscale_params']`` or the configuration)."""
    from chutes.scheduler.loops import LeaderLoop

    params = services.extras.get("autoscale_params") or params_from_config(services.config)
    autoscaler = Autoscaler(services, params)
    services.extras["autoscaler"] = autoscaler
    return [LeaderLoop("autoscaler", params.interval, autoscaler.tick, services.config.loop_max_backoff_s)]
