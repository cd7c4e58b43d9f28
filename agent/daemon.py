"""The agent daemon: probe the GPUs, keep the node registered and alive in Consul, publish its inventory.

Three loops share the latest reading and never die: each catches the errors of its remote service, logs once
per change of state (``LinkState``), backs off with jitter and keeps going; the GPUs are probed whatever Consul
and Nomad do.

* probe: reads the GPU source every ``probe`` seconds (in a worker thread) and rebuilds the inventory;
* consul: registers service ``chutes-agent`` (ID ``chutes-agent-<node_id>``) with a liveness TTL check and a
  GPU-health TTL check, refreshes both every ``heartbeat`` seconds (the GPU check is ``warning`` while a GPU
  is unhealthy), re-registers when Consul forgets it, and publishes the inventory to KV (``chutes.agent.kv``);
* nomad: sets the node's dynamic meta (``chutes_gpu_model``, ``chutes_gpu_count``, ``chutes_gpu_vram_gb``)
  on change and every ``kv_refresh`` seconds.

On stop (SIGTERM) the service is deregistered, so the node leaves the catalog at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from chutes.core.backoff import Backoff
from chutes.core.inventory import AGENT_SERVICE, KV_PREFIX, NodeInventory, agent_service_id
from chutes.core.portfile import write_port_file

from .backoff import LinkState
from .config import AgentConfig, consul_duration
from .consul_link import CONSUL_ERRORS, PASSING, WARNING, ConsulLink
from .kv import KVPublisher, Outcome
from .metrics import AgentState, MetricsServer
from .nomad_link import NOMAD_ERRORS, NomadLink
from .sources import NO_GPU, GPUReading, GPUSource, build_inventory, describe_health
from .summary import fingerprint, models, nomad_meta, service_meta

log = logging.getLogger("chutes.agent")


class NodeNotFound(Exception):
    """Nomad has no node for this agent (yet)."""


_NOMAD_LOOP_ERRORS: tuple[type[BaseException], ...] = (*NOMAD_ERRORS, NodeNotFound)


async def resolve_node(config: AgentConfig, nomad: NomadLink | None) -> tuple[str, str | None]:
    """``(node_id, nomad_node_id)`` at startup: the configured id, else the local Nomad node's name, else the
    hostname. A Nomad that does not answer is not waited for; the Nomad loop finds the node later."""
    if config.node_id is not None or nomad is None:
        return config.node_id or config.hostname, config.nomad_node_id
    try:
        local = await nomad.local_node()
    except NOMAD_ERRORS as exc:
        log.warning(
            "cannot ask Nomad at %s for this node's name (%s); using the hostname %r as node id",
            nomad.address.url,
            exc,
            config.hostname,
        )
        return config.hostname, config.nomad_node_id
    if local is None:
        return config.hostname, config.nomad_node_id
    return local[1], config.nomad_node_id or local[0]


class Agent:
    """One node's agent; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        config: AgentConfig,
        source: GPUSource,
        *,
        node_id: str,
        nomad_node_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.source = source
        self.clock = clock
        self.intervals = config.intervals
        self.node_id = node_id
        self.nomad_node_id = nomad_node_id
        self.state = AgentState(nomad_up=False if config.nomad else None)
        self.reading: GPUReading | None = None
        self.inventory: NodeInventory | None = None
        self.fingerprint = ""
        self._probe_failing = False
        self._source_error: str | None = None
        self._last_health: tuple[bool, str] | None = None
        self.kv: KVPublisher | None = None
        self.metrics_port: int | None = None
        self._registered_meta: dict[str, str] | None = None

    @property
    def service_id(self) -> str:
        return agent_service_id(self.node_id)

    @property
    def alive_check_id(self) -> str:
        return f"{self.service_id}:alive"

    @property
    def gpu_check_id(self) -> str:
        return f"{self.service_id}:gpus"

    # -- GPUs ------------------------------------------------------------------------------------------------

    async def probe(self) -> None:
        """Take one reading and rebuild the inventory; a failing source keeps the last good one."""
        try:
            reading = await asyncio.to_thread(self.source.read)
        except Exception as exc:  # a broken source must not stop the heartbeat
            self.state.probe_errors += 1
            if not self._probe_failing:
                log.error(
                    "reading GPUs from %s failed (%s: %s); keeping the last reading",
                    self.source.name,
                    type(exc).__name__,
                    exc,
                )
            self._probe_failing = True
            return
        if self._probe_failing:
            log.info("reading GPUs from %s works again", self.source.name)
        self._probe_failing = False
        self.reading = reading
        self.state.last_probe = self.clock()
        source_error = getattr(self.source, "last_error", None)  # a simulation file that turned bad
        if source_error:
            self.state.probe_errors += 1
        if source_error != self._source_error:
            if source_error:
                log.error("%s; keeping the last good reading", source_error)
            self._source_error = source_error
        self._rebuild()

    def _rebuild(self) -> None:
        if self.reading is None:
            return
        inv = build_inventory(self.reading, self.node_id, self.config.hostname, self.nomad_node_id, self.clock())
        fp = fingerprint(inv)
        if fp != self.fingerprint:
            self.fingerprint = fp
            log.info(
                "inventory: %d GPU(s), model %s, driver %s, CUDA %s",
                len(inv.gpus),
                models(inv),
                inv.driver_version,
                inv.cuda_version,
            )
        health = describe_health(self.reading)
        if health != self._last_health:
            (log.info if health[0] else log.warning)("GPU health: %s", health[1])
            self._last_health = health
        self.inventory = inv
        self.state.inventory = inv

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.intervals.probe)
            try:
                await self.probe()
            except Exception:  # a bug in building the inventory: log it, keep the last one, keep going
                self.state.probe_errors += 1
                log.exception("building the inventory failed; keeping the last one")

    # -- Consul ----------------------------------------------------------------------------------------------

    def _checks(self, healthy: bool) -> list[dict[str, Any]]:
        ttl = consul_duration(self.intervals.ttl)
        return [
            {
                "CheckID": self.alive_check_id,
                "Name": "chutes-agent heartbeat",
                "Notes": f"the agent refreshes this check every {consul_duration(self.intervals.heartbeat)}",
                "TTL": ttl,
                "DeregisterCriticalServiceAfter": consul_duration(self.intervals.deregister_after),
                "Status": PASSING,
            },
            {
                "CheckID": self.gpu_check_id,
                "Name": "GPU health",
                "Notes": "warning while a GPU is unhealthy (ECC errors, NVML errors, lost GPU) or none is found",
                "TTL": ttl,
                "Status": PASSING if healthy else WARNING,
            },
        ]

    async def _register(self, consul: ConsulLink, inv: NodeInventory, healthy: bool) -> None:
        meta = service_meta(inv, self.source.name)
        tags = [
            "chutes",
            f"source:{self.source.name}",
            *(f"gpu:{m}" for m in sorted({g.model for g in inv.gpus if g.model})),
        ]
        await consul.register(
            self.service_id,
            AGENT_SERVICE,
            meta=meta,
            tags=tags,
            port=self.metrics_port,
            checks=self._checks(healthy),
        )
        self._registered_meta = meta
        log.info(
            "registered service %s in Consul (%s)", self.service_id, ", ".join(f"{k}={v}" for k, v in meta.items())
        )

    async def _heartbeat(self, consul: ConsulLink, healthy: bool, note: str) -> bool:
        """Refresh both TTL checks; False when Consul no longer knows them."""
        inv = self.inventory
        count = len(inv.gpus) if inv else 0
        alive = await consul.update_ttl(self.alive_check_id, PASSING, f"agent alive, {count} GPU(s)")
        gpus = await consul.update_ttl(self.gpu_check_id, PASSING if healthy else WARNING, note)
        return alive and gpus

    async def _consul_loop(self, consul: ConsulLink) -> None:
        link = LinkState("Consul", consul.address.url, log)
        backoff = Backoff(base=min(1.0, self.intervals.heartbeat), cap=self.intervals.backoff_cap)
        kv = self.kv = KVPublisher(
            consul, f"{KV_PREFIX}{self.node_id}", self.intervals.kv_refresh, on_conflict=self._on_conflict
        )
        registered = False
        lost_in_a_row = 0
        delay = self.intervals.heartbeat

        async def tick() -> None:
            nonlocal registered, lost_in_a_row, delay
            inv = self.inventory
            assert inv is not None and self.reading is not None
            healthy, note = describe_health(self.reading)
            if not registered or service_meta(inv, self.source.name) != self._registered_meta:
                await self._register(consul, inv, healthy)
                registered = True
            if await self._heartbeat(consul, healthy, note):
                lost_in_a_row = 0
                self.state.heartbeats += 1
            else:
                # Consul forgot the service (restarted without state, or reaped it): register again now,
                # or after a pause when that keeps happening.
                lost_in_a_row += 1
                log.warning("Consul does not know service %s any more; registering it again", self.service_id)
                registered = False
                delay = 0 if lost_in_a_row == 1 else backoff.next_delay()
            if registered:
                outcome = await kv.publish(inv.model_dump_json().encode(), self.fingerprint)
                if outcome is Outcome.WRITTEN:
                    log.debug("inventory written to %s", kv.key)

        while True:
            delay = self.intervals.heartbeat
            if not await link.attempt(tick, CONSUL_ERRORS, backoff):
                registered = False
                delay = backoff.next_delay()
            self.state.consul_up = bool(link.up)
            self.state.kv_writes = kv.writes
            self.state.duplicate_node_id = kv.conflict
            await asyncio.sleep(delay)

    def _on_conflict(self) -> None:
        self.state.kv_conflicts += 1

    async def _deregister(self, consul: ConsulLink) -> None:
        try:
            async with asyncio.timeout(5):
                await consul.deregister(self.service_id)
            log.info("deregistered service %s from Consul", self.service_id)
        except CONSUL_ERRORS as exc:
            log.warning(
                "could not deregister %s (%s); Consul marks it critical after %s and removes it after %s",
                self.service_id,
                exc or type(exc).__name__,
                consul_duration(self.intervals.ttl),
                consul_duration(self.intervals.deregister_after),
            )

    # -- Nomad -----------------------------------------------------------------------------------------------

    async def _nomad_loop(self, nomad: NomadLink) -> None:
        link = LinkState("Nomad", nomad.address.url, log)
        backoff = Backoff(base=min(1.0, self.intervals.heartbeat), cap=self.intervals.backoff_cap)
        applied: dict[str, str] | None = None
        applied_at = 0.0

        async def tick() -> None:
            nonlocal applied, applied_at
            if self.nomad_node_id is None:
                await self._find_nomad_node(nomad)
            inv = self.inventory
            assert inv is not None and self.nomad_node_id is not None
            meta = nomad_meta(inv)
            now = self.clock()
            if meta != applied or now - applied_at >= self.intervals.kv_refresh:
                await nomad.set_meta(self.nomad_node_id, meta)
                if meta != applied:
                    log.info(
                        "Nomad node %s meta: %s", self.nomad_node_id, ", ".join(f"{k}={v}" for k, v in meta.items())
                    )
                applied, applied_at = meta, now

        while True:
            delay = self.intervals.heartbeat
            if not await link.attempt(tick, _NOMAD_LOOP_ERRORS, backoff):
                applied = None
                delay = backoff.next_delay()
            self.state.nomad_up = bool(link.up)
            await asyncio.sleep(delay)

    async def _find_nomad_node(self, nomad: NomadLink) -> None:
        found = await nomad.node_named([self.node_id, self.config.hostname]) or await nomad.local_node()
        if found is None:
            raise NodeNotFound(
                f"no Nomad node is named {self.node_id!r} or {self.config.hostname!r} and the Nomad agent at "
                f"{nomad.address.url} runs no client; set --nomad-node-id"
            )
        self.nomad_node_id = found[0]
        log.info("this is Nomad node %s (%s)", found[0], found[1])
        self._rebuild()  # the inventory carries the Nomad node ID

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        nomad = NomadLink(cfg.nomad, cfg.nomad_token) if cfg.nomad else None
        consul = ConsulLink(cfg.consul, cfg.consul_token)
        metrics: MetricsServer | None = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            log.info(
                "chutes-agent for node %s: GPUs from %s, Consul %s, Nomad %s",
                self.node_id,
                self.source.name,
                cfg.consul.url,
                cfg.nomad.url if cfg.nomad else "not configured",
            )
            await self.probe()
            if self.reading is None:  # the source failed (logged); publish "no GPU" until a reading works
                self.reading = GPUReading(source=self.source.name, error=f"{NO_GPU}: the first GPU reading failed")
                self._rebuild()
            if cfg.metrics_port is not None:
                metrics = MetricsServer(self.state, cfg.metrics_host, cfg.metrics_port)
                self.metrics_port = metrics.port
                log.info("metrics at http://%s:%d/metrics", cfg.metrics_host, metrics.port)
            if cfg.ports_file is not None:
                write_port_file(
                    cfg.ports_file, {"pid": os.getpid(), "node_id": self.node_id, "metrics": self.metrics_port}
                )
            tasks.append(asyncio.create_task(self._probe_loop(), name="probe"))
            tasks.append(asyncio.create_task(self._consul_loop(consul), name="consul"))
            if nomad is not None:
                tasks.append(asyncio.create_task(self._nomad_loop(nomad), name="nomad"))
            stopped = asyncio.create_task(stop.wait(), name="stop")
            tasks.append(stopped)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = None if task is stopped else task.exception()
                if error is not None:  # a loop died despite catching its errors: a bug; exit so systemd restarts
                    raise error
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if tasks:
                await self._deregister(consul)
            await consul.close()
            if nomad is not None:
                await nomad.close()
            if metrics is not None:
                metrics.close()
            self.source.close()
