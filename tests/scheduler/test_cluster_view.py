"""The cluster view's pure core: raw reads of Consul and Nomad become typed snapshots (no sockets), the
incremental placement index equals a full build, and instances and a chute's status derive from a snapshot."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

import pytest

from chutes.core.inventory import NodeInventory, simulated_gpus
from chutes.scheduler.cluster_view import (
    AGENTS,
    CHECKS,
    KV,
    ClusterView,
    Fetch,
    Reads,
    build_snapshot,
    instance_health,
    placement_cluster,
    usage_key,
)
from chutes.scheduler.instance_states import chute_status, instance_views
from chutes.scheduler.inventory_reader import InventoryUnavailable
from chutes.scheduler.nomad_api import Indexed
from chutes.scheduler.placement import Cluster, NodeState, place_many
from chutes.scheduler.store.control_models import GpuReservation
from chutes.scheduler.store.models import Chute
from tests.scheduler.test_placement import node, request

CHUTE = "11111111-2222-3333-4444-555555555555"
OTHER = "99999999-2222-3333-4444-555555555555"


def check(node_name: str, status: str, service_id: str = "", name: str = "") -> dict[str, Any]:
    return {"Node": node_name, "CheckID": "c", "Status": status, "ServiceID": service_id, "ServiceName": name}


def service_id(alloc: str) -> str:
    return f"_nomad-task-{alloc}-group-instance-chute-{CHUTE}-http"


ALLOC_A = "aaaaaaaa-0000-0000-0000-000000000001"
ALLOC_B = "bbbbbbbb-0000-0000-0000-000000000002"


def test_instance_health_joins_service_and_node_checks_by_allocation() -> None:
    checks = [
        check("n1", "passing"),  # serfHealth of n1
        check("n2", "critical"),  # n2 is going away: every service on it fails
        check("n1", "passing", service_id(ALLOC_A), f"chute-{CHUTE}"),
        check("n2", "passing", service_id(ALLOC_B), f"chute-{CHUTE}"),
        check("n1", "passing", "not-nomads", f"chute-{CHUTE}"),  # not registered by Nomad: left out
    ]
    assert instance_health(checks) == {ALLOC_A: True, ALLOC_B: False}
    # Two checks of one service: both must pass.
    failing = [*checks[:3], check("n1", "warning", service_id(ALLOC_A), f"chute-{CHUTE}")]
    assert instance_health(failing) == {ALLOC_A: False}


def alloc(alloc_id: str, job: str, status: str = "running", node_name: str = "n1", **extra: Any) -> dict[str, Any]:
    return {
        "ID": alloc_id, "JobID": job, "ClientStatus": status, "DesiredStatus": "run", "NodeName": node_name,
        "NodeID": f"nomad-{node_name}", "CreateIndex": int(alloc_id[-1]), "CreateTime": 1_700_000_000 * 10**9,
        **extra,
    }  # fmt: skip


def inventory(node_id: str, model: str, count: int) -> NodeInventory:
    return NodeInventory(node_id=node_id, hostname=node_id, nomad_node_id=f"nomad-{node_id}",
                         gpus=simulated_gpus(node_id, model, count), updated_at=0.0)  # fmt: skip


def with_gpus(a: dict[str, Any], uuids: list[str]) -> dict[str, Any]:
    devices = [{"Type": "gpu", "Vendor": "nvidia", "Name": "A100-SXM4-80GB", "DeviceIDs": uuids}]
    return {**a, "AllocatedResources": {"Tasks": {"runtime": {"Devices": devices}},
                                        "Shared": {"Ports": [{"Label": "http", "Value": 23001,
                                                              "HostIP": "127.0.0.1"}]}}}  # fmt: skip


def reads(allocs: list[dict[str, Any]], checks: list[dict[str, Any]]) -> Reads:
    invs = {"n1": inventory("n1", "a100", 4), "n2": inventory("n2", "h100_sxm", 8)}
    return Reads(inventories=invs, problems=(), alive=frozenset(invs), checks=tuple(checks),
                 allocations=tuple(allocs), nomad_nodes=None)  # fmt: skip


def chute_row(desired: int = 1) -> Chute:
    return Chute(id=CHUTE, name="c", username="u", slug="c", version="v" * 64, desired_instances=desired,
                 manifest={"cords": [{"name": "x"}]}, status="registered", status_detail="")  # fmt: skip


def test_snapshot_groups_allocations_by_chute_and_instances_take_their_health_and_gpus() -> None:
    n1_gpus = [g.uuid for g in inventory("n1", "a100", 4).gpus]
    allocs = [
        with_gpus(alloc(ALLOC_A, f"chute-{CHUTE}"), n1_gpus[:2]),
        alloc(ALLOC_B, f"chute-{CHUTE}", status="pending", node_name="n2"),
        alloc("cccccccc-0000-0000-0000-000000000003", f"chute-{OTHER}"),
        alloc("dddddddd-0000-0000-0000-000000000004", "some-other-job"),
    ]
    snap = build_snapshot(reads(allocs, [check("n1", "passing", service_id(ALLOC_A), f"chute-{CHUTE}")]))
    assert [a["ID"] for a in snap.allocations_of(CHUTE)] == [ALLOC_A, ALLOC_B]
    assert set(snap.allocations) == {CHUTE, OTHER}
    # Placement sees the GPUs the first allocation holds as in use, and its instance on n1.
    n1 = snap.inventory.node("n1")
    assert n1 is not None and sum(g.in_use for g in n1.gpus) == 2 and n1.instances == {CHUTE: 1, OTHER: 1}
    views = instance_views(chute_row(), snap.allocations_of(CHUTE), snap.health, snap.inventories)
    ready, pending = views
    assert (ready.state, ready.healthy, ready.node_id, ready.gpu_model, ready.gpu_count) == (
        "ready",
        True,
        "n1",
        "a100",
        2,
    )
    assert (ready.address, ready.port) == ("127.0.0.1", 23001)
    assert (pending.state, pending.healthy, pending.node_id) == ("pending", False, "n2")
    assert chute_status(views, 1) == ("ready", "1 of 1 instances ready")
    # The same allocation before its check passes: running, and the chute says it waits for /_ready.
    unhealthy = build_snapshot(reads(allocs[:1], [check("n1", "critical", service_id(ALLOC_A), f"chute-{CHUTE}")]))
    views = instance_views(chute_row(), unhealthy.allocations_of(CHUTE), unhealthy.health, unhealthy.inventories)
    assert [v.state for v in views] == ["running"]
    assert chute_status(views, 1) == ("running", "starting: waiting for /_ready")
    assert chute_status([], 0) == ("idle", "scaled to zero") and chute_status([], 1) is None


def test_usage_key_ignores_what_placement_does_not_see() -> None:
    a = alloc(ALLOC_A, f"chute-{CHUTE}")
    moved = {**a, "TaskStates": {"runtime": {"Events": [{"Type": "Started"}]}}, "ModifyIndex": 99}
    assert usage_key([a]) == usage_key([moved])
    assert usage_key([a]) != usage_key([{**a, "ClientStatus": "complete"}])


def random_nodes(count: int, seed: int) -> list[NodeState]:
    rng = random.Random(seed)
    models = ["a100", "h100_sxm", "l40s", "4090"]
    nodes = []
    for i in range(count):
        n = node(f"n{i:03d}", rng.choice(models), rng.choice([1, 2, 4, 8]))
        if rng.random() < 0.2:  # some mixed nodes
            extra = node(f"n{i:03d}", rng.choice(models), 2).gpus
            n = replace(n, gpus=n.gpus + tuple(replace(g, uuid=g.uuid + "-x") for g in extra))
        nodes.append(replace(n, alive=rng.random() > 0.05))
    return nodes


def test_with_nodes_equals_a_full_build() -> None:
    rng = random.Random(3)
    nodes = random_nodes(200, 3)
    base = Cluster.build(nodes)
    for _ in range(30):
        changed = []
        for n in rng.sample(nodes, 5):
            gpus = tuple(replace(g, in_use=rng.random() < 0.5) for g in n.gpus)
            changed.append(replace(n, gpus=gpus, instances={CHUTE: rng.randint(0, 2)}))
        if rng.random() < 0.2:  # a change of shape (a GPU turns unhealthy): built anew, still equal
            n = rng.choice(nodes)
            changed.append(replace(n, gpus=(replace(n.gpus[0], healthy=False), *n.gpus[1:])))
        updated = {n.node_id: n for n in nodes} | {n.node_id: n for n in changed}
        assert base.with_nodes(changed) == Cluster.build(updated.values())
    assert base.with_nodes([]) is base and base.with_nodes(nodes[:3]) is base


def test_placement_cluster_frees_the_chutes_own_gpus_and_takes_reserved_ones() -> None:
    n1_gpus = [g.uuid for g in inventory("n1", "a100", 4).gpus]
    allocs = [with_gpus(alloc(ALLOC_A, f"chute-{CHUTE}"), n1_gpus)]  # the chute holds all of n1
    snap = build_snapshot(reads(allocs, []))
    a100 = request(CHUTE, gpu_count=4, include=["a100"])
    assert place_many(snap.inventory.cluster, a100, 1).placements == ()
    # A new version of the chute replaces its instances: their GPUs count as free.
    freed = placement_cluster(snap, exclude_chute=CHUTE)
    assert [p.node_id for p in place_many(freed, a100, 1).placements] == ["n1"]
    # Unless another decision reserved them.
    held = [GpuReservation(chute_id=OTHER, node_id="n1", model="a100", gpu_count=1, created_at=0, expires_at=1e12)]
    assert place_many(placement_cluster(snap, exclude_chute=CHUTE, reserved=held), a100, 1).placements == ()
    # Reservations of the chute itself do not count against it.
    own = [replace_reservation(held[0], chute_id=CHUTE)]
    assert len(place_many(placement_cluster(snap, exclude_chute=CHUTE, reserved=own), a100, 1).placements) == 1
    # The result equals the full build over the same adjusted nodes.
    assert freed == Cluster.build(freed.nodes.values())


def replace_reservation(r: GpuReservation, **changes: Any) -> GpuReservation:
    values = {k: getattr(r, k) for k in ("chute_id", "node_id", "model", "gpu_count", "created_at", "expires_at")}
    return GpuReservation(**{**values, **changes})


def test_gpu_model_falls_back_to_the_device_name_without_an_inventory() -> None:
    a = with_gpus(alloc(ALLOC_A, f"chute-{CHUTE}", node_name="unknown"), ["GPU-x", "GPU-y"])
    views = instance_views(chute_row(), [a], {}, {})
    assert (views[0].gpu_model, views[0].gpu_count) == ("a100_sxm", 2)  # Nomad's device name, read by the catalog


class FakeSources(ClusterView):
    """The view over injected sources (the I/O edge): each answers from a list, or fails while ``down``."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__(None, None, wait_s=0.05, max_age_s=10.0, min_interval_s=0.01, max_backoff_s=0.05,
                         clock=lambda: clock[0])  # fmt: skip
        self.down: set[str] = set()
        self.reads: dict[str, int] = {}
        self.index = 1

    @property
    def sources(self) -> dict[str, Fetch]:
        def source(name: str, value: Any) -> Fetch:
            async def fetch(index: int, wait_s: float | None) -> Indexed[Any]:
                self.reads[name] = self.reads.get(name, 0) + 1
                if name in self.down:
                    raise InventoryUnavailable(f"{name} is down")
                if index:
                    await asyncio.sleep(wait_s or 0)  # a blocking query with nothing new
                return Indexed(self.index, value)

            return fetch

        invs = {"n1": inventory("n1", "a100", 4)}
        return {KV: source(KV, (invs, [])), AGENTS: source(AGENTS, frozenset(invs)), CHECKS: source(CHECKS, [])}


async def test_a_view_whose_source_fails_longer_than_its_bound_is_read_once_and_keeps_its_last_state() -> None:
    clock = [1000.0]
    view = FakeSources(clock)
    try:
        first = await view.wait_loaded(5)
        assert view.age() == 0.0 and await view.current() is first  # followed: no read on the caller's path
        view.down.add(CHECKS)
        while CHECKS not in view._failing_since:
            await asyncio.sleep(0.01)
        clock[0] += 5
        assert view.age() == 5.0 and await view.current() is first  # within the bound: the last good state
        clock[0] += 10
        with pytest.raises(InventoryUnavailable, match="is down"):
            await view.current()  # past the bound: read once, and its failure is said, not hidden
        assert view.latest() is first
        view.down.clear()
        fresh = await view.current()  # the read succeeds (or the follower recovered first): fresh again
        assert view.age() == 0.0 and fresh.inventory.nodes == first.inventory.nodes
    finally:
        await view.stop()
