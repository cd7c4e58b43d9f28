"""Discovery: which instances of a chute are passing their health checks, from Consul blocking queries.

One watch per active chute service (``chute-<chute_id>``): a loop of ``GET /v1/health/service/<name>?passing``
with ``index``/``wait`` (py-consul's asyncio client), so a change in health reaches the table as soon as
Consul sees it. A failing query keeps the last known table and retries with jittered backoff (a Consul
outage must not empty the routing table). A watch starts on the first call to a chute and stops when the
chute has not been called for ``idle_after`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from chutes.core import health
from chutes.core.backoff import Backoff
from chutes.core.blocking import advance
from chutes.core.consul_client import consul_aio
from chutes.core.waiting import wait_event
from chutes.gateway.balancer import Upstream

log = logging.getLogger(__name__)


#: Narrows a service's passing instances to those that may get calls; True when some could not be checked yet
#: (the watch then asks again shortly). ``chutes.gateway.allocations.NomadAllocations`` is one.
Verifier = Callable[[str, list[tuple[str, str, int]]], Awaitable[tuple[list[tuple[str, str, int]], bool]]]


class HealthSource(Protocol):
    """The one Consul call discovery needs: py-consul's ``consul.aio.Consul().health``."""

    async def service(self, service: str, **kwargs: Any) -> tuple[str | None, list[dict[str, Any]]]: ...


class ServiceWatch:
    """The live table of one service: its passing instances, and a way to wait for it to change."""

    def __init__(self, name: str, now: float) -> None:
        self.name = name
        self.upstreams: list[Upstream] = []
        self.last_used = now
        self.loaded = asyncio.Event()  # set once the first answer (or first failure) is in
        self.ready = False  # ``loaded.is_set()`` as a plain attribute, for the hot path
        self.healthy = False  # the last query succeeded
        self.index: int = 0
        self.holders = 0  # calls held waiting for an instance: keeps the watch alive
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def update(self, found: list[tuple[str, str, int]]) -> bool:
        """Replace the table, keeping each continuing instance's in-flight count; True if it changed."""
        current = {u.key: u for u in self.upstreams}
        fresh: list[Upstream] = []
        for key, host, port in found:
            up = current.get(key)
            if up is None or up.host != host or up.port != port:
                up = Upstream(key, host, port)
            fresh.append(up)
        changed = [u.key for u in fresh] != [u.key for u in self.upstreams] or any(
            a is not b for a, b in zip(fresh, self.upstreams, strict=False)
        )
        if changed:
            self.upstreams = fresh
            self._notify()
        return changed

    def mark_loaded(self) -> None:
        self.ready = True
        self.loaded.set()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, seconds: float) -> None:
        """Wait until the table changes or ``seconds`` pass."""
        await wait_event(self._changed, seconds)


class ConsulDiscovery:
    """Watches Consul for the passing instances of the chute services the gateway is asked for."""

    def __init__(
        self,
        health: HealthSource,
        wait: str = "30s",
        idle_after: float = 600.0,
        min_interval: float = 0.05,
        backoff_max: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        verify: Verifier | None = None,
        verify_retry: float = 1.0,
    ) -> None:
        self._health = health
        self._verify = verify
        self._verify_retry = verify_retry
        self._wait = wait
        self._idle_after = idle_after
        self._min_interval = min_interval
        self._backoff_max = backoff_max
        self._clock = clock
        self._watches: dict[str, ServiceWatch] = {}
        self._reaper: asyncio.Task[None] | None = None

    @property
    def watches(self) -> Mapping[str, ServiceWatch]:
        return self._watches

    def watch(self, service: str, now: float | None = None) -> ServiceWatch:
        """The table of ``service``, starting a watch on it if there is none; marks it as used."""
        now = self._clock() if now is None else now
        state = self._watches.get(service)
        if state is None:
            state = ServiceWatch(service, now)
            state.task = asyncio.create_task(self._run(state), name=f"consul-watch:{service}")
            self._watches[service] = state
            if self._reaper is None:
                self._reaper = asyncio.create_task(self._reap(), name="consul-watch-reaper")
        state.last_used = now
        return state

    async def close(self) -> None:
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        if self._reaper is not None:
            tasks.append(self._reaper)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watches.clear()
        self._reaper = None

    def stop(self, service: str) -> None:
        state = self._watches.pop(service, None)
        if state is not None and state.task is not None:
            state.task.cancel()

    async def _run(self, state: ServiceWatch) -> None:
        backoff = Backoff.after_first_failure(0.25, self._backoff_max)
        while True:
            started = self._clock()
            try:
                kwargs: dict[str, Any] = {"passing": True}
                if state.index:
                    kwargs.update(index=str(state.index), wait=self._wait)
                raw_index, entries = await self._health.service(state.name, **kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.healthy = False
                state.mark_loaded()
                delay = backoff.next_delay()
                log.warning("consul watch %s failed (%r); keeping %d instances, retry in %.1fs",
                            state.name, exc, len(state.upstreams), delay)  # fmt: skip
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            state.healthy = True
            state.index = advance(state.index, raw_index).index
            found = health.instances(entries)
            pending = False
            if self._verify is not None:
                try:
                    found, pending = await self._verify(state.name, found)
                except Exception:  # a failing check must not end the watch: keep the table, ask again
                    log.exception("checking the instances of %s failed", state.name)
                    found, pending = [(u.key, u.host, u.port) for u in state.upstreams], True
            if state.update(found):
                log.info("service %s: %d passing instances", state.name, len(state.upstreams))
            state.mark_loaded()
            if pending:  # some instances could not be checked yet: ask again soon, without blocking
                state.index = 0
                await asyncio.sleep(self._verify_retry)
                continue
            elapsed = self._clock() - started
            if elapsed < self._min_interval:  # rate-limit a watch whose answers come back at once
                await asyncio.sleep(self._min_interval - elapsed)

    async def _reap(self) -> None:
        period = max(0.5, min(60.0, self._idle_after / 4))
        while True:
            await asyncio.sleep(period)
            now = self._clock()
            for name, state in list(self._watches.items()):
                if state.holders == 0 and now - state.last_used > self._idle_after:
                    log.info("service %s not called for %.0fs: stopping its watch", name, now - state.last_used)
                    self.stop(name)


def consul_health(consul_addr: str, token: str | None = None, request_timeout: float = 60.0) -> Any:
    """A py-consul asyncio client for ``consul_addr`` (``http(s)://host:port``, or ``host:port`` with
    ``CONSUL_HTTP_SSL``; TLS from ``CONSUL_CACERT`` & co.); its ``.health`` is a HealthSource."""
    # Each watched chute holds one blocking query open: aiohttp's default pool of 100 would queue the rest.
    return consul_aio(consul_addr, token, timeout=request_timeout, connections_limit=4096)
