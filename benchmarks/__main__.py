"""``python -m benchmarks [--quick] [NAME ...]``: run every benchmark module in this folder (or the named ones),
then write the consolidated report (``benchmarks/results/report.md`` and ``report.json``).

Each module runs as ``python -m benchmarks.<name>`` in its own process (its own event loop, servers and
globals), one after the other, with a time limit; a failing module is reported and the others still run.
``--quick`` passes each module the smaller arguments in ``QUICK_ARGS`` (fewer requests, rounds, runs and
shorter windows: a smoke run of every figure in a few minutes). Exit code 1 if any module failed. Results
land in ``benchmarks/results/`` (written by each module; ``report`` reads them all).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"report"}  # runs last, over the others' results
MODULE_TIMEOUT_S = 480
QUICK_ARGS: dict[str, list[str]] = {
    "agent_resources": ["--seconds", "15", "--settle", "4"],
    "cold_start": ["--runs", "2"],
    "container_cold_start": ["--runs", "1"],
    "image_build": ["--runs", "1"],
    "discovery": ["--reps", "1"],
    "edge": ["--calls", "150", "--flood-seconds", "8"],
    "gateway_overhead": ["--seconds", "2", "--rounds", "3", "--clients", "1,16", "--stream-calls", "40"],
    "gateway_percall": ["--calls", "5000", "--rounds", "3"],
    "invalidation": ["--rounds", "8", "--ttl-rounds", "1"],
    "placement": ["--decisions", "150"],
    "placement_at_scale": ["--sizes", "200", "--decisions", "10"],
    "resources": ["--seconds", "8"],
    "runtime_overhead": ["--requests", "4000", "--rounds", "3"],
}


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem not in NOT_BENCHMARKS)


def run_module(name: str, args: list[str]) -> int:
    print(f"== benchmarks.{name} {' '.join(args)}".rstrip(), flush=True)
    started = time.monotonic()
    try:
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *args], cwd=HERE.parent,
                               timeout=MODULE_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        print(f"== benchmarks.{name}: over {MODULE_TIMEOUT_S} s, stopped", flush=True)
        return 124
    print(f"== benchmarks.{name}: exit {code} in {time.monotonic() - started:.1f} s\n", flush=True)
    return code


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names_given = [a for a in argv if a != "--quick"]
    available = discover()
    names = names_given or available
    unknown = [n for n in names if n not in available]
    if unknown:
        sys.stderr.write(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}\n")
        return 2
    started = time.monotonic()
    failed = [name for name in names if run_module(name, QUICK_ARGS.get(name, []) if quick else []) != 0]
    run_module("report", [])
    print(f"== all done in {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        sys.stderr.write(f"failed: {', '.join(failed)}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
