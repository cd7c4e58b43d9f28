"""Resident memory and CPU of the gateway and the agents at idle and under load, on the embedded stack.

    python -m benchmarks.resources [--seconds 20] [--clients 64]

Starts the stack ``chutes dev`` runs (defaults everywhere: agent heartbeat 5 s, probe 10 s; gateway with
uvloop), deploys a copy of examples/hello.py (concurrency raised to the client count, one instance), then
measures two windows of ``--seconds`` one after the other in the same run: idle (no calls) and under load
(``--clients`` concurrent clients calling ``POST /hello`` through the gateway back to back, each on its own
keep-alive connection). For every process of the stack: resident set size (sampled twice a second, mean and
max) and CPU time over the window (user + system, from /proc) as a share of one core, and for the gateway the
CPU time per call. The agents' work does not depend on calls: under load they show what a busy node costs
them (nothing more than at idle, apart from contention). The scheduler, the devcluster and the instance are
listed for context. Loopback only, bounded in time. Writes JSON and markdown to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._devstack import REPO, Embedded, chute_copy, distribution, embedded_stack
from benchmarks._proc import cpu_seconds, rss_mb
from benchmarks.report import machine, write_results
from tests.support.polling import poll_until


def _processes(es: Embedded) -> dict[str, int]:
    procs = {c.name: c.pid for c in es.stack.children if c.pid is not None}
    tasks = json.loads((es.stack.data_dir / "devcluster" / "tasks.json").read_text())
    for pgid in tasks:  # the instance's task runs in its own process group, led by the runtime
        procs["instance (runtime)"] = int(pgid)
    return procs


async def _window(procs: dict[str, int], seconds: float, load: Any = None) -> dict[str, Any]:
    rss: dict[str, list[float]] = {name: [] for name in procs}
    start_cpu = {name: cpu_seconds(pid) for name, pid in procs.items()}
    started = time.monotonic()
    task = asyncio.create_task(load(seconds)) if load else None
    while (elapsed := time.monotonic() - started) < seconds:
        for name, pid in procs.items():
            rss[name].append(rss_mb(pid))
        await asyncio.sleep(min(0.5, max(0.0, seconds - elapsed)))
    calls = await task if task else None
    wall = time.monotonic() - started
    rows = {}
    for name, pid in procs.items():
        cpu = cpu_seconds(pid) - start_cpu[name]
        rows[name] = {
            "rss_mb_mean": round(sum(rss[name]) / len(rss[name]), 1),
            "rss_mb_max": round(max(rss[name]), 1),
            "cpu_s": round(cpu, 3),
            "cpu_pct_of_core": round(100 * cpu / wall, 2),
        }
    return {"window_s": round(wall, 1), "processes": rows, "calls": calls}


def _load(es: Embedded, slug: str, clients: int) -> Any:
    url = f"{es.info.gateway_url}/{es.info.username}/{slug}/hello"
    headers = {"Authorization": f"Bearer {es.info.api_key}"}

    async def run(seconds: float) -> dict[str, Any]:
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        deadline = time.monotonic() + seconds

        async def worker(session: aiohttp.ClientSession, w: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                n += 1
                t0 = time.perf_counter()
                async with session.post(url, json={"name": f"w{w}-{n}"}, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - t0)

        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            await asyncio.gather(*(worker(session, w) for w in range(clients)))
        total = sum(statuses.values())
        return {
            "clients": clients,
            "calls": total,
            "calls_per_s": round(total / seconds, 1),
            "latency_ms": distribution([x * 1000 for x in latencies], 2),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
        }

    return run


async def measure(es: Embedded, slug: str, seconds: float, clients: int) -> dict[str, Any]:
    procs = _processes(es)
    await asyncio.sleep(3.0)  # settle after the deploy
    idle = await _window(procs, seconds)
    loaded = await _window(procs, seconds, _load(es, slug, clients))
    calls = loaded["calls"]["calls"]
    gateway_cpu = loaded["processes"]["gateway"]["cpu_s"] - idle["processes"]["gateway"]["cpu_s"]
    return {
        "processes": procs,
        "idle": idle,
        "load": loaded,
        "gateway_cpu_us_per_call": round(1e6 * gateway_cpu / calls, 1) if calls else None,
    }


def run(seconds: float, clients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="resources-") as tmp, embedded_stack() as es:
        ref = chute_copy(Path(tmp), REPO / "examples" / "hello.py", "hello", "hello-res")
        path = Path(ref.split(":")[0])
        path.write_text(path.read_text().replace("concurrency=4", f"concurrency={clients}"))
        with es.client(timeout=120) as client:
            chute_id = str(client.deploy(ref)["chute_id"])
        poll_until(lambda: es.consul_passing(chute_id), "the instance passing", 120, 0.05)
        figures = asyncio.run(measure(es, "hello-res", seconds, clients))
    return {"benchmark": "resources", "machine": machine(), "window_s": seconds, **figures}


def markdown(report: dict[str, Any]) -> list[str]:
    load = report["load"]["calls"]
    lines = [
        "# Gateway and agent resources at idle and under load (embedded stack)",
        "",
        f"Two {report['window_s']:g} s windows in one run: idle, then {load['clients']} clients calling hello "
        f"through the gateway back to back ({load['calls_per_s']} calls/s, p50 {load['latency_ms']['p50']} ms, "
        f"p99 {load['latency_ms']['p99']} ms; statuses "
        f"{load['statuses']}). Gateway CPU per call: {report['gateway_cpu_us_per_call']} µs. All processes share "
        "the machine's cores with the load generator.",
        "",
        "| process | idle RSS MB (max) | idle CPU % of a core | load RSS MB (max) | load CPU % of a core |",
        "|---|---:|---:|---:|---:|",
    ]
    order = sorted(report["idle"]["processes"], key=lambda n: (not n.startswith(("gateway", "agent")), n))
    for name in order:
        i, lo = report["idle"]["processes"][name], report["load"]["processes"][name]
        lines.append(
            f"| {name} | {i['rss_mb_mean']} ({i['rss_mb_max']}) | {i['cpu_pct_of_core']} | "
            f"{lo['rss_mb_mean']} ({lo['rss_mb_max']}) | {lo['cpu_pct_of_core']} |"
        )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each window (default 20)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients under load (default 64)")
    args = parser.parse_args(argv)
    report = run(args.seconds, args.clients)
    write_results("resources", report, markdown(report))
    return report


if __name__ == "__main__":
    main()
