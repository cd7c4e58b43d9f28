"""Placement speed: decisions per second and latency percentiles on synthetic GPU inventories.

    python -m benchmarks.placement [--sizes 1000,10000,50000] [--decisions 400] [--seed 7]

Each inventory mixes catalog models and node sizes (1-8 GPUs, a few nodes with two models), has part of its
GPUs in use, some nodes with a dead agent and some drained; requests mix GPU counts, include lists, VRAM
floors and price caps. One decision = ``place(cluster, request)`` on a prebuilt snapshot (the scheduler
rebuilds the snapshot once per inventory change, timed separately as ``build_ms``). Side by side, a baseline
that scans every node through the same checks on each decision (no snapshot index) runs on a sample of the
same requests and must choose the same nodes; the ratio is reported. Target from the issue:
p99 < 20 ms per decision at 10,000 nodes. Pure CPU, no network. Writes JSON and markdown to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import random
import statistics
import time
from typing import Any

from benchmarks.report import table, write_results
from chutes import gpus
from chutes.chute.node_selector import NodeSelector
from chutes.scheduler.placement import GPU, Cluster, NodeState, Placement, PlacementRequest, place
from chutes.scheduler.placement.feasibility import (
    MODEL_CHECKS,
    NODE_CHECKS,
    enough_free,
    enough_healthy,
    enough_vram,
)

# Roughly what a GPU fleet looks like: many mid-range cards, fewer big ones.
MODEL_WEIGHTS = {
    "4090": 10,
    "a5000": 6,
    "a6000": 6,
    "l4": 8,
    "l40s": 10,
    "a100_40gb": 5,
    "a100": 10,
    "a100_sxm": 8,
    "h100": 5,
    "h100_sxm": 12,
    "h100_nvl": 3,
    "h200": 6,
    "b200": 3,
}
SIZES = (1, 2, 4, 8)
SIZE_WEIGHTS = (2, 3, 4, 6)


def synthetic_nodes(count: int, seed: int) -> list[NodeState]:
    """``count`` nodes: mixed models and sizes, ~55% of GPUs busy, 2% dead agents, 1% drained, 2% two models."""
    rng = random.Random(seed)
    models = list(MODEL_WEIGHTS)
    weights = list(MODEL_WEIGHTS.values())
    chutes = [f"chute-{i}" for i in range(200)]
    nodes = []
    for n in range(count):
        node_id = f"node-{n:06d}"
        size = rng.choices(SIZES, SIZE_WEIGHTS)[0]
        layout = [(rng.choices(models, weights)[0], size)]
        if size >= 4 and rng.random() < 0.02:
            layout = [(layout[0][0], size // 2), (rng.choices(models, weights)[0], size // 2)]
        busy_fraction = rng.choice((0.0, 0.25, 0.5, 0.75, 1.0))
        node_gpus: list[GPU] = []
        for model, k in layout:
            spec = gpus.get(model)
            for _ in range(k):
                index = len(node_gpus)
                node_gpus.append(
                    GPU(
                        uuid=f"GPU-{node_id}-{index}",
                        model=model,
                        memory_mib=spec.memory_mib,
                        healthy=rng.random() > 0.01,
                        in_use=rng.random() < busy_fraction,
                    )
                )
        instances = {rng.choice(chutes): rng.randint(1, 2) for _ in range(rng.randint(0, 3))}
        nodes.append(
            NodeState(
                node_id=node_id,
                gpus=tuple(node_gpus),
                nomad_node_id=f"nomad-{n}",
                alive=rng.random() > 0.02,
                eligible=rng.random() > 0.01,
                instances=instances,
            )
        )
    return nodes


def synthetic_requests(count: int, seed: int) -> list[PlacementRequest]:
    rng = random.Random(seed + 1)
    selectors = [
        NodeSelector(gpu_count=1),
        NodeSelector(gpu_count=1, min_vram_gb_per_gpu=24),
        NodeSelector(gpu_count=2, include=["a100", "h100_sxm"]),
        NodeSelector(gpu_count=4, min_vram_gb_per_gpu=80),
        NodeSelector(gpu_count=8, include=["h100_sxm", "h200", "b200"]),
        NodeSelector(gpu_count=2, min_vram_gb_per_gpu=48, max_hourly_price_per_gpu=1.0),
        NodeSelector(gpu_count=1, exclude=["4090", "l4"]),
        NodeSelector(gpu_count=8, min_vram_gb_per_gpu=140),
        NodeSelector(gpu_count=1, include=["h20", "a100_40gb_sxm"]),  # not in this fleet: unschedulable
    ]
    return [PlacementRequest.from_selector(f"chute-{rng.randrange(200)}", rng.choice(selectors)) for _ in range(count)]


def scan_place(nodes: list[NodeState], request: PlacementRequest) -> str | None:
    """Baseline without the snapshot index: every node through every check, every decision; the chosen node."""
    price = {g.id: g.hourly_usd for g in gpus.CATALOG.values()}
    best: tuple[float, int, int, str] | None = None
    for node in nodes:
        if not all(check(node) for _, check in NODE_CHECKS):
            continue
        for model in {g.model for g in node.gpus if g.model in price}:
            assert model is not None
            if not all(check(model, price[model], request) for _, check in MODEL_CHECKS):
                continue
            healthy = [g for g in node.gpus if g.model == model and g.healthy]
            free = sum(not g.in_use for g in healthy)
            vram = min((g.memory_mib for g in healthy), default=0)
            if enough_vram(vram, request) and enough_healthy(len(healthy), request) and enough_free(free, request):
                key = (price[model], free - request.gpu_count, node.instances.get(request.chute_id, 0), node.node_id)
                best = key if best is None or key < best else best
    return None if best is None else best[3]


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def measure(size: int, decisions: int, seed: int) -> dict[str, Any]:
    nodes = synthetic_nodes(size, seed)
    start = time.perf_counter()
    cluster = Cluster.build(nodes)
    build_ms = (time.perf_counter() - start) * 1000
    requests = synthetic_requests(decisions, seed)
    for request in requests[:10]:  # warm-up
        place(cluster, request)
    latencies: list[float] = []
    placed = 0
    wall = time.perf_counter()
    for request in requests:
        t0 = time.perf_counter_ns()
        result = place(cluster, request)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        placed += isinstance(result, Placement)
    wall = time.perf_counter() - wall
    latencies.sort()
    # The baseline on a sample of the same requests (it is slow), checked to choose the same nodes.
    sample = requests[: max(5, decisions // 20)]
    scan = time.perf_counter()
    for request in sample:
        chosen = scan_place(nodes, request)
        result = place(cluster, request)
        assert chosen == (result.node_id if isinstance(result, Placement) else None), "baseline disagrees"
    scan_ms = (time.perf_counter() - scan) * 1000 / len(sample)
    return {
        "nodes": size,
        "decisions": decisions,
        "placed": placed,
        "build_ms": round(build_ms, 2),
        "decisions_per_s": round(decisions / wall, 1),
        "mean_ms": round(statistics.fmean(latencies), 3),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3),
        "scan_baseline_mean_ms": round(scan_ms, 3),
        "speedup_vs_scan": round(scan_ms / statistics.fmean(latencies), 1),
    }


def growth_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Between consecutive sizes: how much each cost grew, and as an exponent of the growth in nodes."""
    out = []
    for a, b in itertools.pairwise(rows):
        n = b["nodes"] / a["nodes"]
        entry: dict[str, Any] = {"from_nodes": a["nodes"], "to_nodes": b["nodes"], "nodes_ratio": round(n, 2)}
        for key, field in (("mean", "mean_ms"), ("p99", "p99_ms"), ("build", "build_ms")):
            ratio = b[field] / a[field] if a[field] else float("nan")
            entry[f"{key}_ratio"] = round(ratio, 2)
            entry[f"{key}_exponent"] = round(math.log(ratio) / math.log(n), 2) if ratio > 0 and n > 1 else None
        out.append(entry)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--decisions", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rows = [measure(int(s), args.decisions, args.seed) for s in args.sizes.split(",")]
    growth = growth_of(rows)
    report = {
        "benchmark": "placement",
        "target": "p99 < 20 ms per decision at 10,000 nodes",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # a shared machine inflates the tail, not the median
        "results": rows,
        "growth": growth,
    }
    lines = [
        "# Placement decisions",
        "",
        f"Target: {report['target']}. Python {report['python']} on {report['machine']}, {report['cpus']} CPUs, "
        f"1-minute load average {report['load_average_1m']} at the end of the run.",
        "",
    ]
    columns = ("nodes", "decisions", "placed", "build_ms", "decisions_per_s", "mean_ms", "p50_ms", "p99_ms", "max_ms")
    lines += table(
        ("nodes", "decisions", "placed", "snapshot build ms", "decisions/s", "mean ms", "p50 ms", "p99 ms", "max ms",
         "per-node scan ms (baseline)", "speedup"),
        ([*(r[c] for c in columns), r["scan_baseline_mean_ms"], f"{r['speedup_vs_scan']}x"] for r in rows),
    )  # fmt: skip
    lines += ["", "How the cost grows (exponent k of cost ∝ nodes^k between two sizes; 1 = linear):", ""]
    lines += [
        f"- {g['from_nodes']} → {g['to_nodes']} nodes (×{g['nodes_ratio']:g}): mean decision ×{g['mean_ratio']} "
        f"(k = {g['mean_exponent']}), p99 ×{g['p99_ratio']} (k = {g['p99_exponent']}), snapshot build ×"
        f"{g['build_ratio']} (k = {g['build_exponent']})"
        for g in growth
    ]
    write_results("placement", report, lines)
    return report


if __name__ == "__main__":
    main()
