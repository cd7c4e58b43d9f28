"""The cluster as placement sees it: agent inventories (Consul KV), agent liveness (Consul health), GPUs in use
and instances per chute (Nomad allocations), and Nomad's scheduling eligibility.

The join is pure (``build_nodes``); ``InventoryReader`` does the I/O: each read once or as a blocking query, or
everything once (``snapshot``). ``cluster_view.ClusterView`` keeps it current for the whole scheduler.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import consul
from pydantic import ValidationError

from chutes import gpus
from chutes.core.blocking import parse_index
from chutes.core.inventory import AGENT_SERVICE, KV_PREFIX, NodeInventory, agent_service_id
from chutes.scheduler.nomad_api import Indexed, NomadClient, NomadError
from chutes.scheduler.placement import GPU, Cluster, NodeState, mark_in_use

log = logging.getLogger("chutes.scheduler.inventory")

_CHUTE_JOB = re.compile(r"^chute-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
ACTIVE_CLIENT_STATUSES = frozenset({"pending", "running"})
CONSUL_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, TimeoutError, consul.ConsulException)


class InventoryUnavailable(Exception):
    """Consul or Nomad could not be read; the message says which and why."""


# -- the pure part ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeUsage:
    """What active allocations hold on one Nomad node."""

    devices: Mapping[str, frozenset[str]] = field(default_factory=dict)  # device name -> instance IDs held
    instances: Mapping[str, int] = field(default_factory=dict)  # chute_id -> active instances

    def mark(self, node_gpus: tuple[GPU, ...]) -> tuple[GPU, ...]:
        """``node_gpus`` with the held ones in use: by ID, and by model for IDs the inventory does not know."""
        known = {g.uuid for g in node_gpus}
        held: set[str] = set()
        by_model: Counter[str] = Counter()
        for name, ids in self.devices.items():
            held |= ids & known
            unknown = len(ids - known)
            model = gpus.identify(name) if unknown else None
            if model is not None:
                by_model[model] += unknown
        return mark_in_use(node_gpus, held, by_model)


def chute_of_job(job_id: str) -> str | None:
    """The chute id of a chute's service job ID (``chute-<uuid>``); None for any other job."""
    m = _CHUTE_JOB.match(job_id)
    return m.group(1) if m else None


def is_active(alloc: Mapping[str, Any]) -> bool:
    """The allocation holds its resources: it should run and has not finished."""
    return alloc.get("DesiredStatus") == "run" and alloc.get("ClientStatus") in ACTIVE_CLIENT_STATUSES


def usage_by_node(allocations: Iterable[Mapping[str, Any]]) -> dict[str, NodeUsage]:
    """GPUs held and chute instances per Nomad node ID, from active allocations with ``AllocatedResources``."""
    devices: dict[str, dict[str, set[str]]] = {}
    instances: dict[str, Counter[str]] = {}
    for alloc in allocations:
        if not is_active(alloc):
            continue
        node = alloc.get("NodeID") or ""
        held = devices.setdefault(node, {})
        for resources in ((alloc.get("AllocatedResources") or {}).get("Tasks") or {}).values():
            for device in (resources or {}).get("Devices") or []:
                if (device.get("Type") or "gpu") == "gpu":
                    held.setdefault(device.get("Name") or "", set()).update(device.get("DeviceIDs") or [])
        chute = chute_of_job(alloc.get("JobID") or "")
        if chute is not None:
            instances.setdefault(node, Counter())[chute] += 1
    return {
        n: NodeUsage({name: frozenset(ids) for name, ids in devices.get(n, {}).items()}, dict(instances.get(n, {})))
        for n in set(devices) | set(instances)
    }


def nomad_eligibility(nomad_nodes: Iterable[Mapping[str, Any]]) -> tuple[dict[str, bool], dict[str, str]]:
    """(Nomad node ID -> can take work, node name -> Nomad node ID) from ``GET /v1/nodes`` stubs."""
    eligible = {
        n["ID"]: n.get("Status") == "ready" and n.get("SchedulingEligibility") == "eligible" and not n.get("Drain")
        for n in nomad_nodes
    }
    by_name = {n.get("Name") or "": n["ID"] for n in nomad_nodes}
    return eligible, by_name


def build_nodes(
    inventories: Mapping[str, NodeInventory],
    alive: Iterable[str],
    allocations: Iterable[Mapping[str, Any]] = (),
    nomad_nodes: Iterable[Mapping[str, Any]] | None = None,
) -> list[NodeState]:
    """One NodeState per inventory, sorted by node id.

    A node is alive when its agent's liveness check passes. With ``nomad_nodes`` given, a node is eligible when
    Nomad knows it (by the inventory's ``nomad_node_id``, else by name) and it is ready, eligible and not
    draining; without, every node counts as eligible.
    """
    alive_set = set(alive)
    usage = usage_by_node(allocations)
    eligible_by_id, id_by_name = nomad_eligibility(nomad_nodes) if nomad_nodes is not None else ({}, {})
    out = []
    for node_id in sorted(inventories):
        inv = inventories[node_id]
        nomad_id = inv.nomad_node_id
        if nomad_nodes is not None:
            if nomad_id not in eligible_by_id:
                nomad_id = id_by_name.get(node_id, nomad_id)
            eligible = eligible_by_id.get(nomad_id or "", False)
        else:
            eligible = True
        use = usage.get(nomad_id or "", NodeUsage())
        gpu_list = tuple(GPU(g.uuid, g.model, g.memory_total_mib, g.healthy) for g in inv.gpus)
        out.append(
            NodeState(
                node_id=node_id,
                gpus=use.mark(gpu_list),
                nomad_node_id=nomad_id,
                alive=node_id in alive_set,
                eligible=eligible,
                instances=dict(use.instances),
            )
        )
    return out


def parse_inventories(entries: Iterable[Mapping[str, Any]] | None) -> tuple[dict[str, NodeInventory], list[str]]:
    """Inventories from a recursive KV read of ``chutes/nodes/`` (py-consul: Value is bytes); and problems."""
    out: dict[str, NodeInventory] = {}
    problems: list[str] = []
    for entry in entries or []:
        key = entry.get("Key") or ""
        raw = entry.get("Value")
        if not key.startswith(KV_PREFIX) or key == KV_PREFIX or raw is None:
            continue
        try:
            inv = NodeInventory.model_validate_json(raw)
        except ValidationError as exc:
            problems.append(f"{key}: not a node inventory ({exc.error_count()} errors: {exc.errors()[0]['msg']})")
            continue
        if inv.kv_key() != key:
            problems.append(f"{key}: holds the inventory of node {inv.node_id!r}; ignored")
            continue
        out[inv.node_id] = inv
    return out, problems


def parse_alive(entries: Iterable[Mapping[str, Any]]) -> set[str]:
    """Node ids whose chutes-agent liveness check passes, from ``GET /v1/health/service/chutes-agent``.

    The agent registers ``<service id>:alive`` (liveness) and ``<service id>:gpus`` (GPU health, ``warning``
    while a GPU is unhealthy: the node stays alive, the inventory marks the GPU). Without an ``:alive`` check,
    every check of the service must pass; a critical node-level check (serfHealth) makes the node dead.
    """
    prefix = f"{AGENT_SERVICE}-"
    out = set()
    for entry in entries:
        service = entry.get("Service") or {}
        service_id = service.get("ID") or ""
        node_id = (service.get("Meta") or {}).get("node_id") or service_id.removeprefix(prefix)
        if not service_id.startswith(prefix) or agent_service_id(node_id) != service_id:
            continue
        checks = entry.get("Checks") or []
        if any(not c.get("ServiceID") and c.get("Status") == "critical" for c in checks):
            continue
        own = [c for c in checks if c.get("ServiceID") == service_id]
        liveness = [c for c in own if c.get("CheckID") == f"{service_id}:alive"] or own
        if liveness and all(c.get("Status") == "passing" for c in liveness):
            out.add(node_id)
    return out


@dataclass(frozen=True)
class InventorySnapshot:
    """The joined view at one moment, with the indexes it was read at."""

    nodes: tuple[NodeState, ...]
    inventories: Mapping[str, NodeInventory]
    alive: frozenset[str]
    problems: tuple[str, ...] = ()
    kv_index: int = 0
    health_index: int = 0
    read_at: float = field(default_factory=time.time)

    @functools.cached_property
    def cluster(self) -> Cluster:
        """The placement snapshot of these nodes (built once, on first use)."""
        return Cluster.build(self.nodes)

    @functools.cached_property
    def hosts(self) -> Mapping[str, tuple[str, ...]]:
        """Chute id -> the nodes its active instances run on (built once, on first use)."""
        out: dict[str, list[str]] = {}
        for node in self.nodes:
            for chute in node.instances:
                out.setdefault(chute, []).append(node.node_id)
        return {c: tuple(n) for c, n in out.items()}

    def node(self, node_id: str) -> NodeState | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)


# -- the I/O shell ------------------------------------------------------------------------------------------


class InventoryReader:
    """Reads inventories and liveness from Consul (py-consul's asyncio client) and usage from Nomad.

    ``consul_client`` is a ``consul.aio.Consul`` (created inside the running loop); ``nomad`` may be None, in
    which case no GPU is in use and every node counts as eligible (inventory-only views, e.g. ``/v1/nodes``
    without Nomad).
    """

    def __init__(self, consul_client: Any, nomad: NomadClient | None = None, *, timeout_s: float = 10.0) -> None:
        self.consul = consul_client
        self.nomad = nomad
        self.timeout_s = timeout_s  # per call, on top of a blocking query's wait (py-consul sets no timeout)

    def _deadline(self, wait_s: float | None, index: int) -> float:
        blocking = wait_s if wait_s is not None and index else 0.0
        return blocking + blocking / 16 + self.timeout_s

    async def read_inventories(
        self, index: int = 0, wait_s: float | None = None
    ) -> Indexed[tuple[dict[str, NodeInventory], list[str]]]:
        """``chutes/nodes/`` (recursive); with ``index`` and ``wait_s`` a blocking query."""
        wait = f"{wait_s:g}s" if wait_s is not None and index else None
        try:
            async with asyncio.timeout(self._deadline(wait_s, index)):
                raw_index, entries = await self.consul.kv.get(KV_PREFIX, recurse=True, index=index or None, wait=wait)
        except CONSUL_ERRORS as exc:
            raise InventoryUnavailable(f"reading {KV_PREFIX} from Consul failed: {exc!r}") from None
        return Indexed(parse_index(raw_index), parse_inventories(entries))

    async def read_alive(self, index: int = 0, wait_s: float | None = None) -> Indexed[frozenset[str]]:
        """Node ids whose agent is alive; with ``index`` and ``wait_s`` a blocking query."""
        wait = f"{wait_s:g}s" if wait_s is not None and index else None
        try:
            async with asyncio.timeout(self._deadline(wait_s, index)):
                raw_index, entries = await self.consul.health.service(AGENT_SERVICE, index=index or None, wait=wait)
        except CONSUL_ERRORS as exc:
            raise InventoryUnavailable(f"reading the health of {AGENT_SERVICE} from Consul failed: {exc!r}") from None
        return Indexed(parse_index(raw_index), frozenset(parse_alive(entries or [])))

    async def read_nomad(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """(allocations with resources, node stubs); ([], None) without a Nomad client."""
        if self.nomad is None:
            return [], None
        try:
            allocations, nodes = await asyncio.gather(self.nomad.allocations(resources=True), self.nomad.list_nodes())
        except NomadError as exc:
            raise InventoryUnavailable(f"reading allocations and nodes from Nomad failed: {exc}") from None
        return [a for a in allocations if is_active(a)], nodes

    async def snapshot(self) -> InventorySnapshot:
        """One read of everything, concurrently."""
        inventories, alive, (allocations, nomad_nodes) = await asyncio.gather(
            self.read_inventories(), self.read_alive(), self.read_nomad()
        )
        return self._join(inventories, alive, allocations, nomad_nodes)

    def _join(
        self,
        inventories: Indexed[tuple[dict[str, NodeInventory], list[str]]],
        alive: Indexed[frozenset[str]],
        allocations: list[dict[str, Any]],
        nomad_nodes: list[dict[str, Any]] | None,
    ) -> InventorySnapshot:
        invs, problems = inventories.value
        return InventorySnapshot(
            nodes=tuple(build_nodes(invs, alive.value, allocations, nomad_nodes)),
            inventories=invs,
            alive=alive.value,
            problems=tuple(problems),
            kv_index=inventories.index,
            health_index=alive.index,
        )
