"""Leader-only control loops: a registry, and a runner whose loops never die.

Each module in ``LOOP_MODULES`` defines ``leader_loops(services) -> list[LeaderLoop]``; a module listed and
missing, or without that function, stops the scheduler at start (``chutes.core.registry``). Only the leader
runs the loops (``LeaderSupervisor`` starts them when this scheduler wins the Consul lock and stops them when it
loses it).
A tick that raises is logged and retried with exponential backoff and jitter; the loop keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chutes.core import backoff
from chutes.core.registry import import_all
from chutes.core.waiting import wait_event

if TYPE_CHECKING:
    from chutes.scheduler.metrics import SchedulerMetrics
    from chutes.scheduler.services import Services

log = logging.getLogger(__name__)

LOOP_MODULES = (
    "chutes.scheduler.reconciler",
    "chutes.scheduler.autoscaler",
    "chutes.scheduler.metering",
    "chutes.scheduler.secret_sync",
    "chutes.scheduler.images.flow",
)


@dataclass(frozen=True)
class LeaderLoop:
    """One periodic task of the leader: ``tick`` runs every ``interval`` seconds."""

    name: str
    interval: float
    tick: Callable[[], Awaitable[None]]
    max_backoff: float = 60.0


def collect(services: Services) -> list[LeaderLoop]:
    """The loops of every module in LOOP_MODULES."""
    loops: list[LeaderLoop] = []
    for module in import_all(LOOP_MODULES, "chutes.scheduler.loops.LOOP_MODULES", require="leader_loops"):
        loops.extend(module.leader_loops(services))
    return loops


def backoff_delay(interval: float, failures: int, max_backoff: float) -> float:
    """Delay before the next try after ``failures`` failed ticks in a row: doubling, capped, with jitter."""
    if failures <= 0:
        return interval
    return backoff.backoff_delay(interval, failures, max_backoff)


async def run_forever(loop: LeaderLoop, stop: asyncio.Event, metrics: SchedulerMetrics | None = None) -> None:
    """Run ``loop`` until ``stop`` is set; a failing tick is logged and retried with backoff."""
    failures = 0
    while not stop.is_set():
        started = time.perf_counter()
        try:
            await loop.tick()
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            log.exception("leader loop %s: tick failed (%d in a row)", loop.name, failures)
            if metrics is not None:
                metrics.tick(loop.name, time.perf_counter() - started, ok=False)
        else:
            if metrics is not None:
                metrics.tick(loop.name, time.perf_counter() - started, ok=True)
            if failures:
                log.info("leader loop %s: recovered after %d failed ticks", loop.name, failures)
            failures = 0
        delay = backoff_delay(loop.interval, failures, loop.max_backoff)
        await wait_event(stop, delay)


class LoopRunner:
    """Starts and stops a set of loops together (started on gaining leadership, stopped on losing it)."""

    def __init__(self, loops: list[LeaderLoop], metrics: SchedulerMetrics | None = None) -> None:
        self.loops = loops
        self.metrics = metrics
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    def start(self) -> None:
        if self.running:
            return
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.create_task(run_forever(lp, self._stop, self.metrics), name=f"loop:{lp.name}") for lp in self.loops
        ]
        log.info("leader loops started: %s", ", ".join(lp.name for lp in self.loops) or "(none)")

    async def stop(self, grace: float = 5.0) -> None:
        if not self._tasks:
            return
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        log.info("leader loops stopped")


class LeaderSupervisor:
    """Campaigns for leadership (Consul session lock) and runs the leader loops exactly while it holds it."""

    def __init__(self, services: Services) -> None:
        from chutes.scheduler.leader import LeaderElector

        config = services.config
        self.services = services
        self.runner = LoopRunner(collect(services), services.metrics)
        self.elector = LeaderElector(
            services.consul,
            key=config.leader_key,
            identity=services.public_url,
            ttl_s=config.leader_ttl_s,
            lock_delay_s=config.leader_lock_delay_s,
            on_gain=self._gain,
            on_loss=self._loss,
        )
        self._task: asyncio.Task[None] | None = None

    async def _gain(self) -> None:
        self.services.is_leader = True
        self.services.metrics.set_leader(True)
        self.runner.start()

    async def _loss(self) -> None:
        self.services.is_leader = False
        self.services.metrics.set_leader(False)
        await self.runner.stop()

    async def start(self) -> None:
        self._task = asyncio.create_task(self.elector.run(), name="leader-election")

    async def stop(self) -> None:
        """Stop campaigning: the loops stop first, then the lock is released for the next scheduler."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.runner.stop()
        self.services.is_leader = False
