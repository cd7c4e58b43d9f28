"""The cluster as the scheduler reads it: one read-only view, kept current by blocking queries.

Five sources, each followed by its own blocking query, whose answers are the data itself (nothing is read
twice): the agents' inventories (Consul KV ``chutes/nodes/``, recursive), agent liveness (Consul health of
``chutes-agent``), the health checks of chute instances (Consul ``health/state/any``, chute services and the
nodes' own checks: one list for every chute), every allocation with its resources (Nomad ``/v1/allocations``:
one list call, not one per allocation) and Nomad's nodes. Pure functions join the last good answer of each
into a ``ViewSnapshot``; the placement index is rebuilt only when what placement sees changed.

The API (instances, nodes, a chute's status), the deploy path (placement) and the leader's loops (the
recorder) all read the same view; nothing here writes. A source that fails keeps its last good answer and is
retried with backoff; a reader that needs fresher data than ``max_age_s`` (a source failing for longer, or
the view not loaded yet) reads once, directly (``current``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chutes.core.backoff import Backoff
from chutes.core.blocking import advance
from chutes.core.inventory import NodeInventory
from chutes.core.registrations import alloc_id_of
from chutes.scheduler import reservations
from chutes.scheduler.inventory_reader import (
    CONSUL_ERRORS,
    InventoryReader,
    InventorySnapshot,
    InventoryUnavailable,
    build_nodes,
    chute_of_job,
    is_active,
)
from chutes.scheduler.nomad_api import Indexed, NomadClient, NomadError, allocation_gpu_ids
from chutes.scheduler.placement import Cluster, NodeState
from chutes.scheduler.store.control_models import GpuReservation

log = logging.getLogger("chutes.scheduler.view")

KV, AGENTS, CHECKS, ALLOCATIONS, NODES = "inventories", "liveness", "instance checks", "allocations", "nomad nodes"
# Chute instances' checks, and the nodes' own (serfHealth: a node going away fails every service on it).
CHECKS_FILTER = 'ServiceName matches "^chute-" or ServiceID == ""'
# Nomad calls run on python-nomad's threads, which a cancel cannot interrupt and the interpreter joins at exit:
# their blocking queries wait at most this long, so a scheduler stops within seconds.
NOMAD_WAIT_CAP_S = 5.0


# -- the pure part ------------------------------------------------------------------------------------------


def instance_health(checks: Iterable[Mapping[str, Any]]) -> dict[str, bool]:
    """Allocation id → every check of its Consul service passes (its own and its node's), from
    ``GET /v1/health/state/any`` entries; services not registered by Nomad are left out."""
    node_ok: dict[str, bool] = {}
    by_service: dict[str, list[Mapping[str, Any]]] = {}
    for check in checks:
        service_id = check.get("ServiceID") or ""
        if not service_id:
            node = check.get("Node") or ""
            node_ok[node] = node_ok.get(node, True) and check.get("Status") == "passing"
        else:
            by_service.setdefault(service_id, []).append(check)
    out: dict[str, bool] = {}
    for service_id, own in by_service.items():
        alloc_id = alloc_id_of(service_id)
        if alloc_id is None:
            continue
        passing = all(c.get("Status") == "passing" for c in own)
        passing = passing and all(node_ok.get(c.get("Node") or "", True) for c in own)
        out[alloc_id] = out.get(alloc_id, True) and passing
    return out


def allocations_by_chute(allocations: Iterable[Mapping[str, Any]]) -> dict[str, tuple[Mapping[str, Any], ...]]:
    """Chute id → the allocations of its service job (``chute-<id>``), oldest first."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for alloc in allocations:
        chute = chute_of_job(alloc.get("JobID") or "")
        if chute is not None:
            out.setdefault(chute, []).append(alloc)
    return {c: tuple(sorted(a, key=lambda x: x.get("CreateIndex") or 0)) for c, a in out.items()}


def usage_key(allocations: Iterable[Mapping[str, Any]]) -> tuple[tuple[str, str, str], ...]:
    """What placement sees of the allocations (the active ones, where, and for which job): an allocation's
    task events or health changing does not change it, so the placement index is not rebuilt for them."""
    return tuple(
        sorted((a.get("ID") or "", a.get("NodeID") or "", a.get("JobID") or "") for a in allocations if is_active(a))
    )


@dataclass(frozen=True)
class Reads:
    """The last good answer of each source (``nomad_nodes`` None: no Nomad client, every node eligible)."""

    inventories: Mapping[str, NodeInventory]
    problems: tuple[str, ...]
    alive: frozenset[str]
    checks: tuple[Mapping[str, Any], ...]
    allocations: tuple[Mapping[str, Any], ...]
    nomad_nodes: tuple[Mapping[str, Any], ...] | None


@dataclass(frozen=True)
class ViewSnapshot:
    """The cluster at one moment: placement's nodes (with their index), each chute's allocations and their
    instances' Consul health."""

    inventory: InventorySnapshot
    allocations: Mapping[str, tuple[Mapping[str, Any], ...]]  # chute id -> its service job's allocations
    health: Mapping[str, bool]  # alloc id -> passing in Consul
    taken_at: float = field(default_factory=time.monotonic)

    def allocations_of(self, chute_id: str) -> tuple[Mapping[str, Any], ...]:
        return self.allocations.get(chute_id, ())

    @property
    def inventories(self) -> Mapping[str, NodeInventory]:
        return self.inventory.inventories


def build_inventory(reads: Reads) -> InventorySnapshot:
    """Placement's join of the reads (nodes sorted by id; the placement index is built on first use)."""
    active = [a for a in reads.allocations if is_active(a)]
    nodes = build_nodes(reads.inventories, reads.alive, active, reads.nomad_nodes)
    return InventorySnapshot(
        nodes=tuple(nodes), inventories=reads.inventories, alive=reads.alive, problems=reads.problems
    )


def build_snapshot(reads: Reads, inventory: InventorySnapshot | None = None) -> ViewSnapshot:
    """The snapshot of ``reads``; ``inventory`` reuses a placement join that is still current."""
    return ViewSnapshot(
        inventory=inventory if inventory is not None else build_inventory(reads),
        allocations=allocations_by_chute(reads.allocations),
        health=instance_health(reads.checks),
    )


def placement_cluster(
    snapshot: ViewSnapshot, *, exclude_chute: str | None = None, reserved: Iterable[GpuReservation] = ()
) -> Cluster:
    """The placement index of one decision: ``exclude_chute``'s own GPUs count as free (a new version replaces
    its instances) and reserved GPUs as taken. Only the nodes that differ are re-indexed (``Cluster.with_nodes``)."""
    base = snapshot.inventory.cluster
    changed: dict[str, NodeState] = {}
    if exclude_chute is not None:
        held = {u for a in snapshot.allocations_of(exclude_chute) if is_active(a) for u in allocation_gpu_ids(a)}
        for node_id in snapshot.inventory.hosts.get(exclude_chute, ()):  # its allocations, and their GPUs
            node = base.nodes[node_id]
            changed[node_id] = dataclasses.replace(
                node,
                gpus=tuple(dataclasses.replace(g, in_use=False) if g.uuid in held else g for g in node.gpus),
                instances={c: k for c, k in node.instances.items() if c != exclude_chute},
            )
    nodes = {**base.nodes, **changed} if changed else base.nodes
    changed.update(reservations.reserved_nodes(nodes, reserved, exclude_chute))
    return base.with_nodes(changed.values())


# -- the I/O shell ------------------------------------------------------------------------------------------

Fetch = Callable[[int, float | None], Awaitable[Indexed[Any]]]


class ClusterView:
    """The view, shared by every part of one scheduler process; followers start on first use.

    ``consul_client`` is py-consul's asyncio client; ``nomad`` may be None (no allocation, every node
    eligible: inventory-only views). ``wait_s`` is each blocking query's wait; ``max_age_s`` bounds how long a
    failing source's last answer is trusted by ``current``.
    """

    def __init__(
        self,
        consul_client: Any,
        nomad: NomadClient | None,
        *,
        wait_s: float = 30.0,
        max_age_s: float = 10.0,
        timeout_s: float = 10.0,
        min_interval_s: float = 0.05,
        max_backoff_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = InventoryReader(consul_client, nomad, timeout_s=timeout_s)
        self.consul = consul_client
        self.nomad = nomad
        self.wait_s = wait_s
        self.max_age_s = max_age_s
        self.min_interval_s = min_interval_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self._values: dict[str, Any] = {}
        self._versions: dict[str, int] = {}  # source -> how many answers changed it
        self._failing_since: dict[str, float] = {}  # source -> when its answers stopped (last success)
        self._answered_at: dict[str, float] = {}
        self._snapshot: ViewSnapshot | None = None
        self._usage: tuple[Any, ...] | None = None  # what the current placement join was built from
        self._changed = asyncio.Event()
        self._loaded = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.rebuilds = 0

    # -- reading

    @property
    def sources(self) -> dict[str, Fetch]:
        out: dict[str, Fetch] = {KV: self._read_kv, AGENTS: self._read_alive, CHECKS: self._read_checks}
        if self.nomad is not None:
            out[ALLOCATIONS] = self._read_allocations
            out[NODES] = self._read_nodes
        return out

    def latest(self) -> ViewSnapshot | None:
        """The last snapshot built (None before every source answered once); starts following if needed."""
        self.start()
        return self._snapshot

    def age(self) -> float | None:
        """Seconds since the oldest failing source last answered (0 when all follow); None before loaded."""
        if self._snapshot is None:
            return None
        now = self.clock()
        return max((now - t for t in self._failing_since.values()), default=0.0)

    async def current(self, max_age_s: float | None = None) -> ViewSnapshot:
        """A snapshot no older than ``max_age_s`` (default the view's): the followed one, or one read now.

        Raises InventoryUnavailable when a read is needed and Consul or Nomad cannot be read.
        """
        self.start()
        bound = self.max_age_s if max_age_s is None else max_age_s
        age = self.age()
        if self._snapshot is not None and age is not None and age <= bound:
            return self._snapshot
        if age is None:
            log.info("cluster view not loaded yet: reading the cluster once")
        else:
            failing = ", ".join(sorted(self._failing_since))
            log.warning("cluster view is %.1fs old (%s failing, bound %.1fs): reading the cluster once", age,
                        failing, bound)  # fmt: skip
        return await self.read_once()

    async def read_once(self) -> ViewSnapshot:
        """Read every source now (concurrently, not blocking) and install the answers."""
        names = list(self.sources)
        results = await asyncio.gather(*(self.sources[n](0, None) for n in names))
        now = self.clock()
        for name, result in zip(names, results, strict=True):
            self._store(name, result.value)
            self._answered_at[name] = now
            self._failing_since.pop(name, None)
        return self._rebuild()

    # -- following

    def start(self) -> None:
        """Follow every source (idempotent; needs a running loop)."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._follow(name, fetch), name=f"cluster-view:{name}")
            for name, fetch in self.sources.items()
        ]
        self._tasks.append(asyncio.create_task(self._rebuild_loop(), name="cluster-view:rebuild"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_loaded(self, timeout_s: float) -> ViewSnapshot:
        """The first snapshot, once every source has answered (for tools and tests)."""
        self.start()
        async with asyncio.timeout(timeout_s):
            await self._loaded.wait()
        assert self._snapshot is not None
        return self._snapshot

    async def _follow(self, name: str, fetch: Fetch) -> None:
        """Follow one blocking query forever; a failure keeps the last good answer and backs off."""
        index = 0
        backoff = Backoff.after_first_failure(0.5, self.max_backoff_s)
        while True:
            started = self.clock()
            try:
                result = await fetch(index, self.wait_s if index else None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop never dies: InventoryUnavailable, and anything unforeseen
                self._failing_since.setdefault(name, self._answered_at.get(name, started))
                delay = backoff.next_delay()
                log.warning("cluster view: reading %s failed (retrying in %.1fs): %s", name, delay, exc)
                await asyncio.sleep(delay)
                index = 0
                continue
            backoff.reset()
            step = advance(index, result.index)
            self._answered_at[name] = self.clock()
            self._failing_since.pop(name, None)
            if index == 0 or step.changed or name not in self._values:
                self._store(name, result.value)
                self._changed.set()
            index = step.index
            if self.clock() - started < self.min_interval_s:
                await asyncio.sleep(self.min_interval_s)  # answered at once: do not spin

    async def _rebuild_loop(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if set(self._values) >= set(self.sources):
                try:
                    self._rebuild()
                except Exception:  # a bad answer must not stop the view: keep the last snapshot
                    log.exception("cluster view: building a snapshot failed; keeping the previous one")
            await asyncio.sleep(self.min_interval_s)  # a burst of changes: one rebuild

    def _rebuild(self) -> ViewSnapshot:
        reads = self._reads()
        key = (self._versions.get(KV), self._versions.get(AGENTS), usage_key(reads.allocations),
               self._versions.get(NODES))  # fmt: skip
        inventory = self._snapshot.inventory if self._snapshot is not None and key == self._usage else None
        snapshot = build_snapshot(reads, inventory)
        if inventory is None:
            # The placement index and the chutes' hosts, built here rather than on a deploy's path.
            _ = snapshot.inventory.cluster, snapshot.inventory.hosts
            self.rebuilds += 1
        self._snapshot, self._usage = snapshot, key
        self._loaded.set()
        return snapshot

    def _store(self, name: str, value: Any) -> None:
        self._values[name] = value
        self._versions[name] = self._versions.get(name, 0) + 1

    def _reads(self) -> Reads:
        inventories, problems = self._values[KV]
        nodes = self._values.get(NODES)
        return Reads(
            inventories=inventories,
            problems=tuple(problems),
            alive=self._values[AGENTS],
            checks=tuple(self._values[CHECKS]),
            allocations=tuple(self._values.get(ALLOCATIONS) or ()),
            nomad_nodes=tuple(nodes) if nodes is not None else None,
        )

    # -- the sources (index 0 / wait None: an ordinary read)

    async def _read_kv(self, index: int, wait_s: float | None) -> Indexed[Any]:
        return await self.reader.read_inventories(index, wait_s)

    async def _read_alive(self, index: int, wait_s: float | None) -> Indexed[Any]:
        return await self.reader.read_alive(index, wait_s)

    async def _read_checks(self, index: int, wait_s: float | None) -> Indexed[Any]:
        wait = f"{wait_s:g}s" if wait_s is not None and index else None
        deadline = (wait_s or 0.0) * 1.0625 + self.reader.timeout_s
        try:
            async with asyncio.timeout(deadline):
                raw, checks = await self.consul.health.state(
                    "any", index=index or None, wait=wait, filter_expr=CHECKS_FILTER
                )
        except CONSUL_ERRORS as exc:
            raise InventoryUnavailable(f"reading the chutes' health checks from Consul failed: {exc!r}") from None
        return Indexed(int(raw or 0), list(checks or []))

    async def _read_allocations(self, index: int, wait_s: float | None) -> Indexed[Any]:
        return await self._nomad_list("allocations", index, wait_s, {"resources": "true"})

    async def _read_nodes(self, index: int, wait_s: float | None) -> Indexed[Any]:
        return await self._nomad_list("nodes", index, wait_s, None)

    async def _nomad_list(
        self, path: str, index: int, wait_s: float | None, params: Mapping[str, str] | None
    ) -> Indexed[Any]:
        assert self.nomad is not None
        try:
            # index 0 and no wait: Nomad answers at once.
            wait = min(wait_s or 0.0, NOMAD_WAIT_CAP_S)
            return await self.nomad.blocking_get(path, index=index, wait_s=wait, params=params)
        except NomadError as exc:
            raise InventoryUnavailable(f"reading {path} from Nomad failed: {exc}") from None
