"""Placement on the deploy path at scale: the inventory read included, with nodes registered in a devcluster.

    python -m benchmarks.placement_at_scale [--sizes 1000,10000] [--decisions 20]

For each size, a devcluster gets that many nodes as the agents publish them: a node inventory in Consul KV
(``chutes/nodes/<id>``, mixed catalog models and sizes) and a ``chutes-agent`` service with a passing liveness
check. Then, side by side on the same requests:

- ``read + place``: the deploy path before the cluster view: ``InventoryReader.snapshot()`` (a recursive KV
  read and a health read over HTTP, parsed and joined) and its placement index, then ``place``;
- ``deploy path``: what ``deploy.plan`` does now: ``ClusterView.current()`` (the scheduler's view, kept
  current by blocking queries; read once only when stale), ``placement_cluster`` (the deploying chute's own
  GPUs freed, GPUs of 8 recent decisions reserved: only those nodes are re-indexed) and
  ``place_many``.

What the view costs instead is reported too: a full build of the placement index (done by the view once per
change, off the deploy path), its first load, and the refresh lag (an agent's inventory PUT until the view
shows it, index rebuilt), which grows with the node count because Consul answers a change of one key under a
recursive watch with the whole prefix.

Nomad's node list and allocations are left out (the view runs without a Nomad client: every node counts as
eligible): the devcluster's Nomad does not simulate thousands of clients. Target from issue 19: p99 < 50 ms per
deploy-path decision at 10,000 nodes, and how it grows. Writes JSON and markdown to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import random
import time
from typing import Any

import aiohttp

from benchmarks._devstack import distribution
from benchmarks.placement import MODEL_WEIGHTS, SIZE_WEIGHTS, SIZES, synthetic_requests
from benchmarks.report import machine, table, write_results
from chutes.core.consul_client import consul_aio
from chutes.core.inventory import AGENT_SERVICE, NodeInventory, agent_service_id, simulated_gpus
from chutes.scheduler.cluster_view import ClusterView, placement_cluster
from chutes.scheduler.inventory_reader import InventoryReader
from chutes.scheduler.placement import Cluster, Placement, place, place_many
from chutes.scheduler.store.control_models import GpuReservation
from tests.support.devcluster import devcluster

TARGET = "p99 < 50 ms per deploy-path decision (inventory read included) at 10,000 nodes"


def synthetic_inventories(count: int, seed: int) -> list[NodeInventory]:
    rng = random.Random(seed)
    models = list(MODEL_WEIGHTS)
    weights = list(MODEL_WEIGHTS.values())
    now = time.time()
    return [
        NodeInventory(
            node_id=f"node-{i:05d}",
            hostname=f"node-{i:05d}",
            gpus=simulated_gpus(f"node-{i:05d}", rng.choices(models, weights)[0], rng.choices(SIZES, SIZE_WEIGHTS)[0]),
            updated_at=now,
        )
        for i in range(count)
    ]


async def publish(consul_addr: str, inventories: list[NodeInventory], concurrency: int = 32) -> float:
    """Register every node as its agent would (inventory in KV, service with a passing liveness check)."""
    started = time.perf_counter()
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(base_url=consul_addr) as http:

        async def one(inv: NodeInventory) -> None:
            sid = agent_service_id(inv.node_id)
            service = {
                "ID": sid,
                "Name": AGENT_SERVICE,
                "Meta": {"node_id": inv.node_id},
                "Check": {"CheckID": f"{sid}:alive", "Name": "alive", "TTL": "24h", "Status": "passing"},
            }
            async with semaphore:
                async with http.put(f"/v1/kv/{inv.kv_key()}", data=inv.model_dump_json()) as resp:
                    resp.raise_for_status()
                async with http.put("/v1/agent/service/register", json=service) as resp:
                    resp.raise_for_status()

        await asyncio.gather(*(one(inv) for inv in inventories))
    return time.perf_counter() - started


REFRESHES = 5
RESERVED = 8  # reservations of recent decisions that Nomad has not placed yet, as a busy deploy path sees


async def refresh_lag(consul_addr: str, inventories: list[NodeInventory], view: ClusterView) -> list[float]:
    """How long the view takes to show an agent's new inventory, placement index rebuilt."""
    lags: list[float] = []
    async with aiohttp.ClientSession(base_url=consul_addr) as http:
        for inv in inventories:
            stamp = time.time() + 1000.0  # a value no earlier snapshot holds
            fresh = inv.model_copy(update={"updated_at": stamp})
            t0 = time.perf_counter()
            async with http.put(f"/v1/kv/{fresh.kv_key()}", data=fresh.model_dump_json()) as resp:
                resp.raise_for_status()
            deadline = t0 + 120
            while (snap := view.latest()) is None or (
                (seen := snap.inventories.get(inv.node_id)) is None or seen.updated_at != stamp
            ):
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"the view did not show {inv.node_id}'s update within 120 s")
                await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - t0) * 1000)
    return lags


def reservations_on(inventories: list[NodeInventory], seed: int) -> list[GpuReservation]:
    rng = random.Random(seed)
    out = []
    for inv in rng.sample(inventories, RESERVED):
        model = inv.gpus[0].model or "a100"
        out.append(GpuReservation(chute_id=f"recent-{inv.node_id}", node_id=inv.node_id, model=model, gpu_count=1,
                                  created_at=time.time(), expires_at=time.time() + 600))  # fmt: skip
    return out


async def measure(size: int, decisions: int, seed: int) -> dict[str, Any]:
    inventories = synthetic_inventories(size, seed)
    requests = synthetic_requests(decisions, seed)
    reserved = reservations_on(inventories, seed)
    with devcluster(nodes=("cpu-0=",), local_node=False) as dc:  # Nomad needs one node; it has no GPUs
        publish_s = await publish(dc.consul_addr, inventories)
        consul = consul_aio(dc.consul_addr, None, timeout=60)
        reader = InventoryReader(consul, None, timeout_s=60)
        view = ClusterView(consul, None, wait_s=30, timeout_s=60)
        try:
            first = await reader.snapshot()
            assert len(first.nodes) == size and len(first.alive) == size, (len(first.nodes), len(first.alive))
            read_ms: list[float] = []
            placed = 0
            for request in requests:  # the deploy path before the view: read everything, then decide
                t0 = time.perf_counter()
                snapshot = await reader.snapshot()
                outcome = place(snapshot.cluster, request)
                read_ms.append((time.perf_counter() - t0) * 1000)
                placed += isinstance(outcome, Placement)

            t_load = time.perf_counter()
            await view.wait_loaded(300)
            load_s = time.perf_counter() - t_load
            t_build = time.perf_counter()
            _ = Cluster.build(view.latest().inventory.nodes)  # type: ignore[union-attr]
            build_ms = (time.perf_counter() - t_build) * 1000
            deploy_ms: list[float] = []
            deploy_placed = 0
            for request in requests:  # the deploy path now (deploy.plan): the view, reservations, the decision
                t0 = time.perf_counter()
                current = await view.current()
                cluster = placement_cluster(current, exclude_chute=request.chute_id, reserved=reserved)
                result = place_many(cluster, request, 1)
                deploy_ms.append((time.perf_counter() - t0) * 1000)
                deploy_placed += len(result.placements)
            refresh_ms = await refresh_lag(dc.consul_addr, inventories[:REFRESHES], view)
        finally:
            await view.stop()
            await consul.close()
    read = distribution(read_ms)
    deploy = distribution(deploy_ms)
    return {
        "nodes": size,
        "decisions": decisions,
        "placed": placed,
        "deploy_placed": deploy_placed,
        "publish_s": round(publish_s, 1),
        "view_load_s": round(load_s, 2),
        "read_place_ms": read,
        "deploy_path_ms": deploy,
        "view_build_ms": round(build_ms, 2),
        "view_refresh_ms": distribution(refresh_ms),
        "speedup_p99": round(read["p99"] / deploy["p99"], 1) if deploy["p99"] else None,
    }


def growth_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for a, b in itertools.pairwise(rows):
        ratio = b["nodes"] / a["nodes"]
        entry: dict[str, Any] = {"from_nodes": a["nodes"], "to_nodes": b["nodes"], "nodes_ratio": ratio}
        for key in ("read_place_ms", "deploy_path_ms"):
            r = b[key]["p99"] / a[key]["p99"] if a[key]["p99"] else math.nan
            entry[f"{key}_p99_ratio"] = round(r, 2)
            entry[f"{key}_p99_exponent"] = round(math.log(r) / math.log(ratio), 2) if r > 0 else None
        out.append(entry)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--decisions", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rows = [asyncio.run(measure(int(s), args.decisions, args.seed)) for s in args.sizes.split(",")]
    growth = growth_of(rows)
    report = {"benchmark": "placement_at_scale", "target": TARGET, "machine": machine(), "results": rows}
    report["growth"] = growth
    lines = [
        "# Placement on the deploy path at scale (devcluster)",
        "",
        f"Target: {TARGET}.",
        "",
    ]
    lines += table(
        ("nodes", "decisions", "placed", "register s", "read + place p50 / p99 ms", "deploy path (view) p50 / p99 ms",
         "full index build ms", "view first load s", "view refresh p50 / max ms", "p99 speed-up"),
        (
            [r["nodes"], r["decisions"], r["placed"], r["publish_s"],
             f"{r['read_place_ms']['p50']} / {r['read_place_ms']['p99']}",
             f"{r['deploy_path_ms']['p50']} / {r['deploy_path_ms']['p99']}", r["view_build_ms"], r["view_load_s"],
             f"{r['view_refresh_ms']['p50']} / {r['view_refresh_ms']['max']}", f"{r['speedup_p99']}x"]
            for r in rows
        ),
    )  # fmt: skip
    lines += ["", "Growth (exponent k of p99 ∝ nodes^k; 1 = linear):", ""]
    lines += [
        f"- {g['from_nodes']} → {g['to_nodes']} nodes: read + place p99 ×{g['read_place_ms_p99_ratio']} "
        f"(k = {g['read_place_ms_p99_exponent']}), deploy path p99 ×{g['deploy_path_ms_p99_ratio']} "
        f"(k = {g['deploy_path_ms_p99_exponent']})"
        for g in growth
    ]
    write_results("placement_at_scale", report, lines)
    return report


if __name__ == "__main__":
    main()
