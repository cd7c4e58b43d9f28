"""The consolidated benchmark report: every figure of the last run, the targets, and the machine.

    python -m benchmarks.report

Reads each ``benchmarks/results/<name>.json`` and ``.md`` written by the benchmark modules and writes
``benchmarks/results/report.md`` and ``report.json``: the machine (CPU model, cores, memory, Python, OS, load
average, date), a table of the issue's targets with the measured figure and whether it is met, then each
module's own table. ``python -m benchmarks`` runs it after the modules. Targets are reported, never asserted.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = (
    "gateway_overhead", "gateway_percall", "placement", "placement_at_scale", "cold_start", "container_cold_start",
    "image_build", "discovery", "invalidation", "resources", "agent_resources", "runtime_overhead", "edge",
)  # fmt: skip


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """A markdown table: ``align`` has one letter per column, ``l`` (text) or ``r`` (figures); default: ``r``."""
    marks = [":" if (align[i] if i < len(align) else "r") == "r" else "" for i in range(len(header))]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(f"---{m}" for m in marks) + "|",
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]


def write_results(name: str, report: dict[str, Any], markdown: list[str]) -> None:
    """``results/<name>.json`` and ``.md`` (what this report reads), and the markdown on stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(markdown) + "\n")
    print("\n".join(markdown))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "load_average_1_5_15": load,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def _row(target: str, figure: str, met: bool | None, source: str) -> dict[str, Any]:
    return {"target": target, "figure": figure, "met": met, "source": source}


def targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets against the figures of the last run (a module that did not run is left out)."""
    rows: list[dict[str, Any]] = []
    cold = results.get("cold_start")
    if cold:
        p50 = cold["total_s"]["p50"]
        rows.append(_row("cold start of hello.py < 3 s", f"{p50} s (median of {cold['total_s']['n']})", p50 < 3.0,
                         "cold_start"))  # fmt: skip
    boxed = results.get("container_cold_start")
    if boxed and "ratios_to_process" in boxed:
        ratios = ", ".join(f"{case} {ratio}×" for case, ratio in boxed["ratios_to_process"].items())
        rows.append(_row("cold start, container instance vs process (reported)", ratios, None,
                         "container_cold_start"))  # fmt: skip
    built = results.get("image_build")
    if built and "cold_s" in built:
        rows.append(_row("image build of the test chute: cold vs cache hit (reported)",
                         f"cold {built['cold_s']['p50']} s, cache hit {built['cache_hit_s']['p50']} s "
                         f"({built['ratio_cold_to_cache_hit']}×)", None, "image_build"))  # fmt: skip
    disc = results.get("discovery")
    if disc:
        for interval, f in disc.get("by_check_interval", {}).items():
            crash = round(f["killed_to_critical_s"]["p50"] + f["gone_to_unrouted_s"]["p50"], 3)
            for label, value in (
                ("ready → routed", f["ready_to_routed_s"]["p50"]),
                ("stopped → unrouted", f["gone_to_unrouted_s"]["p50"]),
                ("killed → unrouted", crash),
            ):
                shown = f"{value} s (median)" if value else "< 0.01 s (below the polling resolution)"
                rows.append(_row(f"discovery {label} < 1 s (check interval {interval} s)", shown, value < 1.0,
                                 "discovery"))  # fmt: skip
    inval = results.get("invalidation")
    if inval:
        worst = max(inval["pushed"][k]["p99"] for k in inval["pushed"])
        rows.append(_row("access change (share, unshare, key deleted) → gateway < 1 s", f"p99 {worst} s (worst "
                         f"of the three, {inval['rounds']} rounds)", worst < 1.0, "invalidation"))  # fmt: skip
    place = results.get("placement")
    if place:
        for r in place.get("results", []):
            if r.get("nodes") == 10000:
                rows.append(_row("placement p99 < 20 ms at 10,000 nodes", f"{r['p99_ms']} ms", r["p99_ms"] < 20,
                                 "placement"))  # fmt: skip
    at_scale = results.get("placement_at_scale")
    if at_scale and at_scale.get("results"):
        r = at_scale["results"][-1]  # the largest size measured
        p99 = r["deploy_path_ms"]["p99"]
        rows.append(_row("deploy-path placement p99 < 50 ms at 10,000 nodes (inventory read included)",
                         f"{p99} ms through the cluster view at {r['nodes']} nodes (read on every deploy: "
                         f"{r['read_place_ms']['p99']} ms)", p99 < 50 and r["nodes"] >= 10000,
                         "placement_at_scale"))  # fmt: skip
    agent = results.get("agent_resources")
    if agent:
        a = agent["processes"][0]
        rows.append(_row("agent < 80 MB RSS and < 1% of a core (idle, defaults)",
                         f"{a['rss_mb_max']} MB, {a['cpu_pct_of_core']}%", agent.get("meets_targets"),
                         "agent_resources"))  # fmt: skip
    gateway = results.get("gateway_overhead")
    if gateway:
        measured = {(r["clients"], r["path"]): r for r in gateway.get("results", []) if "clients" in r}
        for label, met in (gateway.get("targets") or {}).items():
            clients = next((c for c, p in measured if p == "gateway" and f"({c} client" in label), None)
            row = measured.get((clients, "gateway"), {}) if clients else {}
            figure = (f"p50 +{row.get('p50_added_ms')} ms, {row.get('throughput_ratio')}× direct throughput, "
                      f"{row.get('proxy_cpu_us_per_request')} µs CPU/call ({row.get('cpu_vs_nginx', '?')}× nginx)"
                      if row else "see the table")  # fmt: skip
            rows.append(_row(f"gateway: {label}", figure, met, "gateway_overhead"))
    edge = results.get("edge")
    if edge and "targets" in edge:
        ratios = edge.get("p50_ratio_to_idle", {})
        figures = {
            "flood": f"p50 {ratios.get('wrong_key_flood')}× idle (throttle off: {ratios.get('unthrottled_flood')}×)",
            "idle": f"p50 {ratios.get('idle_connections')}× idle",
        }
        for label, met in edge["targets"].items():
            rows.append(_row(f"gateway: {label}", figures["flood" if "flood" in label else "idle"], met, "edge"))
    runtime = results.get("runtime_overhead")
    if runtime and "met" in runtime:
        rows.append(_row(str(runtime.get("target", "runtime overhead")),
                         f"{runtime.get('noop_throughput_ratio')}× bare FastAPI throughput", runtime["met"],
                         "runtime_overhead"))  # fmt: skip
    return rows


def build() -> tuple[dict[str, Any], list[str]]:
    names = [n for n in ORDER if (RESULTS / f"{n}.json").exists()]
    names += sorted(p.stem for p in RESULTS.glob("*.json") if p.stem not in names and p.stem != "report")
    results = {n: r for n in names if (r := _load(n)) is not None}
    host = machine()
    rows = targets(results)
    report = {"machine": host, "targets": rows, "benchmarks": results}
    mem = f"{host['memory_gb']} GB" if host["memory_gb"] else "unknown memory"
    lines = [
        "# Benchmark report",
        "",
        f"Measured {host['date']} on {host['cpu_model']}, {host['cores']} cores, {mem}, {host['os']} "
        f"({host['arch']}), {host['implementation']} {host['python']}; load average at the end "
        f"{', '.join(str(x) for x in host['load_average_1_5_15'])}. Every figure below is a ratio or a "
        "distribution measured side by side within one run of its module; the load generators share the machine "
        "with what they measure.",
        "",
        "## Targets",
        "",
    ]
    met = {True: "yes", False: "**no**", None: "-"}
    lines += table(
        ("target", "measured", "met", "from"),
        ((r["target"], r["figure"], met[r["met"]], r["source"]) for r in rows),
        "llll",
    )
    for name in names:
        md = RESULTS / f"{name}.md"
        if md.exists():
            text = md.read_text().strip().splitlines()
            body = [("#" + line) if line.startswith("#") else line for line in text]  # one level down
            lines += ["", *body]
    return report, lines


def main(argv: list[str] | None = None) -> int:
    report, lines = build()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: 12 + len(report["targets"])]))
    print(f"\nwrote {RESULTS / 'report.md'} and report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
