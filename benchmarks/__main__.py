"""``python -m benchmarks [NAME ...]``: run every benchmark module in this folder (or the named ones).

Each module runs as ``python -m benchmarks.<name>`` in its own process (its own event loop, servers and
globals), one after the other; a failing module is reported and the others still run. Exit code 1 if any
failed. Results land in ``benchmarks/results/`` (written by each module).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))


def main(argv: list[str]) -> int:
    available = discover()
    names = argv or available
    unknown = [n for n in names if n not in available]
    if unknown:
        sys.stderr.write(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}\n")
        return 2
    failed: list[str] = []
    for name in names:
        print(f"== benchmarks.{name}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=HERE.parent)
        print(f"== benchmarks.{name}: exit {code} in {time.monotonic() - started:.1f} s\n", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        sys.stderr.write(f"failed: {', '.join(failed)}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
