"""Resident memory and CPU of the agent daemon at its default intervals, against a devcluster.

    python -m benchmarks.agent_resources [--seconds 60] [--gpus h100_sxm:8]

Starts a devcluster with one simulated node and ``chutes-agent run`` simulating the same node with the
default intervals (heartbeat 5 s, TTL 15 s, KV refresh 60 s, probe 10 s) and its metrics server on, lets it
settle, then samples it from /proc for ``--seconds``: resident set size every second, CPU time (user + system)
at the start and the end of the window. Side by side, in the same window, two reference processes: a bare
Python interpreter (the floor of any Python daemon) and one that only imports the agent's modules (what the
code costs before it does anything), so the report separates the interpreter, the imports and the running
loops. Targets from the issue: under 80 MB resident and under 1% of one core (reported, not asserted).
Loopback only. Writes JSON and markdown to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._proc import cpu_seconds, rss_mb
from benchmarks.report import write_results
from tests.support.devcluster import devcluster
from tests.support.polling import poll_until
from tests.support.processes import TestProcess, start

NODE = "bench-node"
TARGET_RSS_MB = 80.0
TARGET_CPU_PCT = 1.0


@dataclass
class Sampled:
    name: str
    proc: TestProcess
    rss: list[float] = field(default_factory=list)
    cpu_start: float = 0.0
    cpu_end: float = 0.0

    def report(self, wall: float) -> dict[str, Any]:
        return {
            "process": self.name,
            "rss_mb_mean": round(sum(self.rss) / len(self.rss), 1),
            "rss_mb_max": round(max(self.rss), 1),
            "cpu_seconds": round(self.cpu_end - self.cpu_start, 3),
            "cpu_pct_of_core": round(100 * (self.cpu_end - self.cpu_start) / wall, 3),
        }


def _spawn(args: list[str], log: Path) -> TestProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_", "CONSUL_"))}
    return start(log.stem, args, log, env)


def _stop(proc: TestProcess) -> int | None:
    """SIGTERM (the agent's exit status on it is reported), SIGKILL after 20 s."""
    proc.stop(20)
    return proc.exited()


def _wait_file(path: Path, proc: TestProcess, timeout: float = 30) -> dict[str, Any]:
    def written() -> dict[str, Any] | None:
        if not proc.alive():
            raise RuntimeError(f"the agent exited with {proc.exited()}")
        return json.loads(path.read_text()) if path.exists() else None  # type: ignore[no-any-return]

    result: dict[str, Any] = poll_until(written, str(path), timeout, 0.05, retry_on=(ValueError, OSError))
    return result


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def run(seconds: float, gpus: str, settle: float, workdir: Path) -> dict[str, Any]:
    model, _, count = gpus.partition(":")
    bin_dir = Path(sys.executable).parent
    with devcluster(nodes=[f"{NODE}={model}:{count or 1}"]) as dc:
        ports_file = workdir / "agent.ports.json"
        agent = Sampled(
            "chutes-agent run (defaults, metrics on)",
            _spawn(
                [
                    str(bin_dir / "chutes-agent"),
                    "run",
                    "--node-id",
                    NODE,
                    "--simulate",
                    gpus,
                    "--consul-addr",
                    dc.consul_addr,
                    "--nomad-addr",
                    dc.nomad_addr,
                    "--metrics-port",
                    "0",
                    "--ports-file",
                    str(ports_file),
                ],
                workdir / "agent.log",
            ),
        )
        bare = Sampled(
            "python, idle (interpreter floor)",
            _spawn([sys.executable, "-c", "import time; time.sleep(10**6)"], workdir / "bare.log"),
        )
        imports = Sampled(
            "python, agent modules imported, idle",
            _spawn(
                [
                    sys.executable,
                    "-c",
                    "import chutes.agent.cli, chutes.agent.daemon, pynvml, consul.aio, "
                    "prometheus_client, time; time.sleep(10**6)",
                ],
                workdir / "imports.log",
            ),
        )
        procs = [agent, bare, imports]
        try:
            metrics_port = int(_wait_file(ports_file, agent.proc)["metrics"])
            time.sleep(settle)  # registration, first KV write, Nomad meta, imports of the references
            beats_start = _metric(metrics_port, "chutes_agent_heartbeats_total")
            for p in procs:
                p.cpu_start = cpu_seconds(p.proc.pid)
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < seconds:
                for p in procs:
                    p.rss.append(rss_mb(p.proc.pid))
                time.sleep(min(1.0, max(0.0, seconds - elapsed)))
            wall = time.monotonic() - t0
            for p in procs:
                p.cpu_end = cpu_seconds(p.proc.pid)
            beats = _metric(metrics_port, "chutes_agent_heartbeats_total") - beats_start
            kv_writes = _metric(metrics_port, "chutes_agent_kv_writes_total")
            _, checks = dc.consul().health.checks("chutes-agent")
            statuses = sorted({c["Status"] for c in checks})
        finally:
            exit_codes = {p.name: _stop(p.proc) for p in procs}
    rows = [p.report(wall) for p in procs]
    a, b, i = rows
    return {
        "benchmark": "agent_resources",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "simulated_gpus": gpus,
        "window_s": round(wall, 1),
        "settle_s": settle,
        "intervals": {"heartbeat_s": 5, "ttl_s": 15, "kv_refresh_s": 60, "probe_s": 10},
        "heartbeats_in_window": beats,
        "kv_writes_total": kv_writes,
        "check_statuses_at_end": statuses,
        "agent_exit_code_on_sigterm": exit_codes[agent.name],
        "processes": rows,
        "agent_rss_over_bare_python": round(a["rss_mb_max"] / b["rss_mb_max"], 2),
        "agent_rss_over_imports_only": round(a["rss_mb_max"] / i["rss_mb_max"], 2),
        "targets": {"rss_mb": TARGET_RSS_MB, "cpu_pct_of_core": TARGET_CPU_PCT},
        "meets_targets": a["rss_mb_max"] < TARGET_RSS_MB and a["cpu_pct_of_core"] < TARGET_CPU_PCT,
    }


def write(report: dict[str, Any]) -> None:
    lines = [
        "# Agent resource use",
        "",
        f"Target: under {TARGET_RSS_MB:g} MB resident and under {TARGET_CPU_PCT:g}% of one core with the simulated "
        f"source at the default intervals. {report['simulated_gpus']} simulated, window {report['window_s']} s "
        f"after {report['settle_s']:g} s of settling, against the devcluster. Python {report['python']} on "
        f"{report['machine']}, {report['cpus']} CPUs.",
        "",
        "| process | RSS mean MB | RSS max MB | CPU s | CPU % of a core |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report["processes"]:
        lines.append(
            f"| {r['process']} | {r['rss_mb_mean']} | {r['rss_mb_max']} | {r['cpu_seconds']} | {r['cpu_pct_of_core']} |"
        )
    lines += [
        "",
        f"Agent RSS / bare interpreter: {report['agent_rss_over_bare_python']}x; agent RSS / imports only: "
        f"{report['agent_rss_over_imports_only']}x. Heartbeats in the window: {report['heartbeats_in_window']:g}; "
        f"check statuses at the end: {', '.join(report['check_statuses_at_end'])}; exit code on SIGTERM: "
        f"{report['agent_exit_code_on_sigterm']}. Meets the targets: {'yes' if report['meets_targets'] else 'no'}.",
    ]
    write_results("agent_resources", report, lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window (default 60)")
    parser.add_argument("--settle", type=float, default=6.0, help="wait before measuring (default 6)")
    parser.add_argument("--gpus", default="h100_sxm:8", help="simulated GPUs, MODEL:COUNT (default h100_sxm:8)")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        report = run(args.seconds, args.gpus, args.settle, Path(tmp))
    write(report)
    return report


if __name__ == "__main__":
    main()
