"""job: a job (a run-to-completion method) that writes output files, dispatched rather than served.

A chute has cords or jobs; this one has a job. Each run gets its input as JSON and a folder to write into;
what it writes there (and its return value) becomes the run's outputs.

    chutes deploy examples/job.py:chute
    chutes jobs run primes count_primes --input '{"limit": 100000}'
    chutes jobs get <run id>                 # status, result and the list of output files
"""

import json
import math
import time
from pathlib import Path

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="demo",
    name="primes",
    image="python:3.12-slim",
    tagline="Counts primes and writes them to a file",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16, max_hourly_price_per_gpu=0.5),
)


def sieve(limit: int) -> list[int]:
    """Every prime below ``limit`` (Eratosthenes)."""
    if limit < 3:
        return []
    is_prime = bytearray([1]) * limit
    is_prime[0:2] = b"\x00\x00"
    for n in range(2, math.isqrt(limit - 1) + 1):
        if is_prime[n]:
            is_prime[n * n :: n] = bytearray(len(range(n * n, limit, n)))
    return [n for n in range(limit) if is_prime[n]]


@chute.job(timeout=600, upload=True)
async def count_primes(self: Chute, limit: int = 10_000, output_dir: str = ".") -> dict[str, object]:
    """Write primes.txt (one prime a line) and summary.json; return the count."""
    if not 2 <= limit <= 50_000_000:
        raise ValueError("limit must be from 2 to 50,000,000")
    started = time.perf_counter()
    primes = sieve(limit)
    out = Path(output_dir)
    (out / "primes.txt").write_text("\n".join(map(str, primes)) + "\n", encoding="utf-8")
    summary = {
        "limit": limit,
        "count": len(primes),
        "largest": primes[-1] if primes else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
