"""The inventory reader: the pure join of inventories, liveness and allocations, then against a devcluster with
real chutes-agent processes (simulated GPUs) publishing to it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import consul.aio
import pytest
import requests

from chutes.chute.node_selector import NodeSelector
from chutes.core.inventory import NodeInventory, agent_service_id, simulated_gpus
from chutes.identity import chute_id
from chutes.manifest import CordSpec, ImageSpec, Manifest
from chutes.scheduler.cluster_view import ClusterView, ViewSnapshot
from chutes.scheduler.inventory_reader import (
    InventoryReader,
    InventorySnapshot,
    InventoryUnavailable,
    build_nodes,
    chute_of_job,
    parse_alive,
    parse_inventories,
    usage_by_node,
)
from chutes.scheduler.nomad_api import NomadClient
from chutes.scheduler.placement import Placement, PlacementRequest, Reason, Unschedulable, place
from chutes.scheduler.render import ChuteRelease, RenderSettings, render_chute_job
from tests.support.devcluster import DevclusterHandle, devcluster
from tests.support.processes import TestProcess, start

CID = "0b7e1e6c-6d1e-5d1a-9c2e-3f4a5b6c7d8e"


def inventory(node_id: str, model: str, count: int, nomad_node_id: str | None = None) -> NodeInventory:
    return NodeInventory(
        node_id=node_id,
        hostname=node_id,
        nomad_node_id=nomad_node_id or f"nomad-{node_id}",
        gpus=simulated_gpus(node_id, model, count),
        updated_at=time.time(),
    )


def alloc(node: str, job: str, ids: list[str], name: str = "NVIDIA A100 80GB PCIe", **status: str) -> dict[str, Any]:
    return {
        "ID": f"a-{node}-{len(ids)}-{job}",
        "NodeID": node,
        "JobID": job,
        "DesiredStatus": status.get("desired", "run"),
        "ClientStatus": status.get("client", "running"),
        "AllocatedResources": {
            "Tasks": {"runtime": {"Devices": [{"Vendor": "nvidia", "Type": "gpu", "Name": name, "DeviceIDs": ids}]}}
        },
    }


def health_entry(node_id: str, alive: str = "passing", gpus_status: str = "passing", serf: str = "passing") -> Any:
    sid = agent_service_id(node_id)
    return {
        "Node": {"Node": node_id},
        "Service": {"ID": sid, "Service": "chutes-agent", "Meta": {"node_id": node_id}},
        "Checks": [
            {"CheckID": "serfHealth", "ServiceID": "", "Status": serf},
            {"CheckID": f"{sid}:alive", "ServiceID": sid, "Status": alive},
            {"CheckID": f"{sid}:gpus", "ServiceID": sid, "Status": gpus_status},
        ],
    }


# -- pure ---------------------------------------------------------------------------------------------------


def test_build_nodes_joins_liveness_usage_and_eligibility() -> None:
    invs = {"gpu-a": inventory("gpu-a", "h100_sxm", 8), "gpu-b": inventory("gpu-b", "a100", 4)}
    b_gpus = [g.uuid for g in invs["gpu-b"].gpus]
    allocations = [
        alloc("nomad-gpu-b", f"chute-{CID}", b_gpus[:2]),
        alloc("nomad-gpu-b", f"chute-{CID}-job-train/dispatch-1-abc", b_gpus[2:3]),
        alloc("nomad-gpu-b", f"chute-{CID}", b_gpus[3:], client="complete"),  # finished: holds nothing
    ]
    nomad_nodes = [
        {"ID": "nomad-gpu-a", "Name": "gpu-a", "Status": "ready", "SchedulingEligibility": "ineligible"},
        {"ID": "nomad-gpu-b", "Name": "gpu-b", "Status": "ready", "SchedulingEligibility": "eligible"},
    ]
    nodes = {n.node_id: n for n in build_nodes(invs, {"gpu-b"}, allocations, nomad_nodes)}
    a, b = nodes["gpu-a"], nodes["gpu-b"]
    assert (a.alive, a.eligible, b.alive, b.eligible) == (False, False, True, True)
    assert [g.in_use for g in b.gpus] == [True, True, True, False]
    assert b.instances == {CID: 1}  # the batch run holds a GPU but is not an instance
    assert not any(g.in_use for g in a.gpus)
    # Without Nomad: every node eligible, nothing in use.
    plain = build_nodes(invs, {"gpu-a", "gpu-b"})
    assert all(n.eligible and not any(g.in_use for g in n.gpus) for n in plain)


def test_nodes_unknown_to_nomad_are_ineligible_and_names_are_a_fallback() -> None:
    invs = {"gpu-x": inventory("gpu-x", "l4", 1, nomad_node_id="stale-id"), "gpu-y": inventory("gpu-y", "l4", 1)}
    nomad_nodes = [{"ID": "real-y", "Name": "gpu-y", "Status": "ready", "SchedulingEligibility": "eligible"}]
    nodes = {n.node_id: n for n in build_nodes(invs, {"gpu-x", "gpu-y"}, [], nomad_nodes)}
    assert nodes["gpu-x"].eligible is False
    assert (nodes["gpu-y"].eligible, nodes["gpu-y"].nomad_node_id) == (True, "real-y")
    drained = [{"ID": "real-y", "Name": "gpu-y", "Status": "ready", "SchedulingEligibility": "eligible", "Drain": True}]
    assert build_nodes(invs, {"gpu-y"}, [], drained)[1].eligible is False


def test_device_ids_the_inventory_does_not_know_count_by_model() -> None:
    invs = {"gpu-b": inventory("gpu-b", "a100", 4)}
    allocations = [alloc("nomad-gpu-b", "other-job", ["nvidia-0", "nvidia-1"])]
    (node,) = build_nodes(invs, {"gpu-b"}, allocations)
    assert sum(g.in_use for g in node.gpus) == 2
    assert usage_by_node(allocations)["nomad-gpu-b"].instances == {}


def test_parse_alive_reads_the_liveness_check() -> None:
    entries = [
        health_entry("ok"),
        health_entry("sick-gpu", gpus_status="warning"),  # a bad GPU does not make the node dead
        health_entry("stale", alive="critical"),
        health_entry("partitioned", serf="critical"),
        {"Service": {"ID": "something-else"}, "Checks": []},
    ]
    assert parse_alive(entries) == {"ok", "sick-gpu"}


def test_parse_inventories_skips_garbage_and_mismatched_keys() -> None:
    good = inventory("gpu-a", "a100", 1)
    entries: list[dict[str, Any]] = [
        {"Key": "chutes/nodes/gpu-a", "Value": good.model_dump_json().encode()},
        {"Key": "chutes/nodes/gpu-b", "Value": good.model_dump_json().encode()},  # claims to be gpu-a
        {"Key": "chutes/nodes/junk", "Value": b"{not json"},
        {"Key": "chutes/nodes/", "Value": None},
    ]
    invs, problems = parse_inventories(entries)
    assert list(invs) == ["gpu-a"]
    assert len(problems) == 2 and any("gpu-b" in p for p in problems) and any("junk" in p for p in problems)
    assert parse_inventories(None) == ({}, [])


def test_chute_of_job() -> None:
    assert chute_of_job(f"chute-{CID}") == CID
    assert chute_of_job(f"chute-{CID}-job-x") is None
    assert chute_of_job("chutes-scheduler") is None


# -- against a devcluster with real agents ------------------------------------------------------------------


def _agent_command() -> list[str]:
    script = shutil.which("chutes-agent", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "chutes.agent.cli"]


class Agents:
    """chutes-agent processes (simulated GPUs) against the devcluster; each in its own process group."""

    def __init__(self, dc: DevclusterHandle, tmp: Path) -> None:
        self.dc = dc
        self.tmp = tmp
        self.procs: dict[str, TestProcess] = {}

    def start(self, node_id: str, model: str, count: int) -> None:
        cmd = [
            *_agent_command(), "run",
            "--simulate", f"{model}:{count}",
            "--node-id", node_id,
            "--nomad-addr", self.dc.nomad_addr,
            "--consul-addr", self.dc.consul_addr,
            "--heartbeat", "0.3", "--ttl", "1.5", "--probe-interval", "0.5", "--kv-refresh", "5",
            "--backoff-cap", "1", "--log-level", "WARNING",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_HTTP_", "CHUTES_"))}
        self.procs[node_id] = start(f"agent-{node_id}", cmd, self.tmp / f"agent-{node_id}.log", env)

    def kill(self, node_id: str) -> None:
        self.procs.pop(node_id).kill()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.signal_group(signal.SIGTERM)  # all at once, then wait for each
        for proc in self.procs.values():
            proc.stop(10)
        self.procs.clear()


@pytest.fixture
def dc() -> Iterator[DevclusterHandle]:
    with devcluster(nodes=["gpu-a=h100_sxm:8", "gpu-b=a100:4", "gpu-c=l40s:2"], local_node=False) as handle:
        yield handle


@pytest.fixture
def agents(dc: DevclusterHandle, tmp_path: Path) -> Iterator[Agents]:
    group = Agents(dc, tmp_path)
    try:
        for node_id, model, count in (("gpu-a", "h100_sxm", 8), ("gpu-b", "a100", 4), ("gpu-c", "l40s", 2)):
            group.start(node_id, model, count)
        yield group
    finally:
        group.stop_all()


@pytest.fixture
async def reader(dc: DevclusterHandle) -> AsyncIterator[InventoryReader]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # py-consul's aiohttp connector arguments
        client = consul.aio.Consul(host="127.0.0.1", port=dc.consul_port)
    async with NomadClient(dc.nomad_addr, timeout_s=5) as nomad:
        try:
            yield InventoryReader(client, nomad)
        finally:
            await client.close()


async def snapshot_until(reader: InventoryReader, predicate: Any, timeout_s: float = 15.0) -> InventorySnapshot:
    deadline = time.monotonic() + timeout_s
    while True:
        snap = await reader.snapshot()
        if predicate(snap):
            return snap
        assert time.monotonic() < deadline, f"not reached in {timeout_s}s: {snap.nodes}"
        await asyncio.sleep(0.1)


def chute_job(name: str, include: list[str], gpu_count: int, count: int) -> dict[str, Any]:
    m = Manifest(
        chute_id=chute_id("alice", name),
        username="alice",
        name=name,
        image=ImageSpec(ref="python:3.12"),
        node_selector=NodeSelector(gpu_count=gpu_count, include=include),
        cords=[CordSpec(name="f", path="/f", public_api_path="/f")],
        sdk_version="0.1.0",
    )
    settings = RenderSettings(
        scheduler_url="http://127.0.0.1:1",
        runtime_command=(sys.executable, "-c", "import time; time.sleep(600)"),
        cpu_mhz_per_gpu=100,
        memory_mb_per_gpu=64,
    )
    return render_chute_job(m, ChuteRelease(hashlib.sha256(b"x").hexdigest(), count=count), settings)


@pytest.mark.timeout(60)
async def test_snapshot_of_the_e2e_cluster_drives_placement(reader: InventoryReader, agents: Agents) -> None:
    snap = await snapshot_until(reader, lambda s: s.alive == {"gpu-a", "gpu-b", "gpu-c"} and len(s.nodes) == 3)
    assert all(n.eligible and n.nomad_node_id for n in snap.nodes)
    b = snap.node("gpu-b")
    assert b is not None and [g.uuid for g in b.gpus] == [g.uuid for g in simulated_gpus("gpu-b", "a100", 4)]
    assert snap.kv_index > 0 and snap.health_index > 0 and snap.problems == ()
    req = PlacementRequest.from_selector("c", NodeSelector(gpu_count=4, include=["a100", "h100_sxm"]))
    first = place(snap.cluster, req)
    assert isinstance(first, Placement) and first.node_id == "gpu-b"

    # Nomad runs a 4-GPU chute on gpu-b: the reader sees the GPUs in use and the instance.
    job = chute_job("four", ["a100"], gpu_count=4, count=1)
    assert reader.nomad is not None
    token_item = "CHUTES_INSTANCE_TOKEN_" + hashlib.sha256(b"x").hexdigest()[:12]
    await reader.nomad.put_variable(f"nomad/jobs/{job['ID']}", {"CHUTES_INVOKE_SECRET": "s", token_item: "t"})
    await reader.nomad.register_job(job)
    snap = await snapshot_until(reader, lambda s: all(g.in_use for g in s.node("gpu-b").gpus))
    b = snap.node("gpu-b")
    assert b is not None and b.instances == {job["Meta"]["chute_id"]: 1}
    second = place(snap.cluster, req)
    assert isinstance(second, Placement) and second.node_id == "gpu-a"
    refused = place(snap.cluster, PlacementRequest.from_selector("c", NodeSelector(gpu_count=4, include=["a100"])))
    assert isinstance(refused, Unschedulable)
    assert refused.rejections == {Reason.WRONG_MODEL: 2, Reason.EXHAUSTED: 1}

    # An agent that dies: its TTL check turns critical and the node stops being alive.
    agents.kill("gpu-c")
    snap = await snapshot_until(reader, lambda s: "gpu-c" not in s.alive)
    c = snap.node("gpu-c")
    assert c is not None and c.alive is False  # the inventory stays, the node is not placed on


async def view_until(view: ClusterView, predicate: Any, timeout_s: float = 15.0) -> ViewSnapshot:
    """The view's snapshot once ``predicate`` holds of it (the view follows by itself: no read here)."""
    deadline = time.monotonic() + timeout_s
    while True:
        snap = view.latest()
        if snap is not None and predicate(snap):
            return snap
        assert time.monotonic() < deadline, "the view did not show the change in time"
        await asyncio.sleep(0.02)


@pytest.mark.timeout(60)
async def test_the_view_follows_every_kind_of_change(dc: DevclusterHandle, reader: InventoryReader) -> None:
    sync = dc.consul()
    view = ClusterView(reader.consul, reader.nomad, wait_s=2, min_interval_s=0.02)
    try:
        first = await view.wait_loaded(10)
        assert first.inventory.nodes == ()
        assert view.age() == 0.0
        # A node publishes its inventory (as an agent would): the view shows it without anyone polling.
        inv = inventory("gpu-b", "a100", 4)
        sync.kv.put(inv.kv_key(), inv.model_dump_json())
        snap = await view_until(view, lambda s: [n.node_id for n in s.inventory.nodes] == ["gpu-b"])
        assert snap.inventory.nodes[0].alive is False
        # ... then registers its service with a passing liveness check.
        sid = agent_service_id("gpu-b")
        sync.agent.service.register(
            "chutes-agent",
            service_id=sid,
            meta={"node_id": "gpu-b"},
            check={"CheckID": f"{sid}:alive", "Name": "alive", "TTL": "30s", "Status": "passing"},
        )
        await view_until(view, lambda s: "gpu-b" in s.inventory.alive)
        # A chute instance's check (as Nomad registers it) turns up in the view's health, by allocation.
        alloc = "0f0e0d0c-0b0a-0908-0706-050403020100"
        service = f"_nomad-task-{alloc}-group-instance-chute-x-http"
        sync.agent.service.register(
            "chute-x", service_id=service, check={"CheckID": f"{service}:ready", "TTL": "30s", "Status": "passing"}
        )
        await view_until(view, lambda s: s.health.get(alloc) is True)
        sync.agent.check.ttl_fail(f"{service}:ready")
        await view_until(view, lambda s: s.health.get(alloc) is False)
        # A bad KV entry is reported, not fatal.
        sync.kv.put("chutes/nodes/junk", "nope")
        snap = await view_until(view, lambda s: bool(s.inventory.problems))
        assert "chutes/nodes/junk" in snap.inventory.problems[0]
        assert [n.node_id for n in snap.inventory.nodes] == ["gpu-b"]
    finally:
        await view.stop()


@pytest.mark.timeout(60)
async def test_the_view_survives_consul_going_away(dc: DevclusterHandle, reader: InventoryReader) -> None:
    view = ClusterView(reader.consul, reader.nomad, wait_s=2, max_backoff_s=0.5, max_age_s=0.0)
    try:
        before = await view.wait_loaded(10)
        dc.restart()  # same ports: the followers see errors (keeping the last good state), then maybe an
        # index that went backwards
        inv = inventory("gpu-a", "h100_sxm", 8)
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.put(f"{dc.consul_addr}/v1/kv/{inv.kv_key()}", data=inv.model_dump_json(), timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert view.latest() is not None  # failures never dropped the last good snapshot
        await view_until(view, lambda s: [n.node_id for n in s.inventory.nodes] == ["gpu-a"], 20)
        assert before.inventory.nodes == ()
    finally:
        await view.stop()


async def test_a_stale_view_is_read_once_and_an_unreachable_one_reported() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = consul.aio.Consul(host="127.0.0.1", port=1)
    view = ClusterView(client, None, timeout_s=0.5, max_backoff_s=0.5)
    try:
        with pytest.raises(InventoryUnavailable, match="Consul"):
            await view.current()  # not loaded: read once, which fails, clearly
        assert view.latest() is None
    finally:
        await view.stop()
        await client.close()


async def test_unreachable_consul_is_reported() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = consul.aio.Consul(host="127.0.0.1", port=1)
    try:
        with pytest.raises(InventoryUnavailable, match="Consul"):
            await InventoryReader(client).snapshot()
    finally:
        await client.close()


async def test_a_consul_that_never_answers_times_out() -> None:
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()  # accept, answer nothing
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = consul.aio.Consul(host="127.0.0.1", port=port)
    try:
        started = time.monotonic()
        with pytest.raises(InventoryUnavailable, match="Consul"):
            await InventoryReader(client, timeout_s=0.5).snapshot()
        assert time.monotonic() - started < 5
    finally:
        await client.close()
        done.set()
        server.close()
        await server.wait_closed()
