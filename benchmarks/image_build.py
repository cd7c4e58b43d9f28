"""Image builds: a chute's image built cold, and built again as a cache hit, side by side in one run.

    python -m benchmarks.image_build [--runs 2]

On the embedded stack with builds on (``chutes dev --builds on``: buildah on the devcluster's builder node, a
docker-registry on loopback), the chute of the image tests (tests/e2e/test_image_builds.py): an ``Image`` from
``localhost/chutes-base:bookworm`` that ``pip install``s one small package, plus the platform's runtime layer
(this checkout's wheel and the runtime's dependencies from PyPI). Each run:

- cold: a context never built before (an ``ENV`` with a fresh value comes first, so buildah reuses no layer):
  ``Client.build(wait=True)`` from the call to the pushed digest (pack, upload, Nomad job, buildah bud, push);
- cache hit: the same context again: the scheduler answers the built image and starts no Nomad job.

Reported: medians and the ratio cold / cache hit. Skipped, with the reason, where buildah, docker-registry or
the base image are missing. pip reaches PyPI through this machine's network (and its CA bundle), which is
most of the cold figure. Writes JSON and markdown to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._devstack import distribution, embedded_stack
from benchmarks.report import machine, write_results
from tests.support.containers import BASE_IMAGE, built_image_chute, containers_missing, ensure_containers_conf

PACKAGE = "tinydb==4.8.0"


def _skip_reason() -> str | None:
    import shutil
    import subprocess

    reason = containers_missing()
    if reason is None and shutil.which("curl") is None:
        reason = "curl is not installed (the build task fetches its context with it)"
    if reason is None:
        ensure_containers_conf()
        if subprocess.run(["podman", "image", "exists", BASE_IMAGE], capture_output=True).returncode != 0:
            reason = f"the base image {BASE_IMAGE} is not in local storage (make base-image builds it)"
    return reason


def run(runs: int) -> dict[str, Any]:
    cold: list[float] = []
    hit: list[float] = []
    refs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="image-build-") as tmp, embedded_stack(builds="on") as es:
        if not es.info.builds:
            raise RuntimeError("the stack did not turn builds on")
        for n in range(1, runs + 1):
            source = Path(tmp) / f"bench_build_{n}.py"
            nonce = secrets.token_hex(8)
            chute = built_image_chute(
                "bench-build", f"run{n}", f"pip install {PACKAGE}", nonce, nonce_env="CHUTES_BENCH_NONCE"
            )
            source.write_text(chute)
            ref = f"{source}:chute"
            with es.client(timeout=120) as client:
                started = time.monotonic()
                image = client.build(ref, wait=True)
                cold.append(time.monotonic() - started)
                if image["status"] != "ready":
                    raise RuntimeError(f"the cold build failed: {image.get('error')}")
                started = time.monotonic()
                again = client.build(ref, wait=True)
                hit.append(time.monotonic() - started)
                if not again["cache_hit"] or again["ref"] != image["ref"]:
                    raise RuntimeError(f"the second build was not a cache hit: {again}")
            refs.append(str(image["ref"]))
    cold_d, hit_d = distribution(cold), distribution(hit)
    return {
        "benchmark": "image_build",
        "machine": machine(),
        "runs": runs,
        "refs": refs,
        "cold_s": cold_d,
        "cache_hit_s": hit_d,
        "ratio_cold_to_cache_hit": round(cold_d["p50"] / hit_d["p50"], 1) if hit_d["p50"] else None,
        "notes": [
            "Cold: pack and upload the context, register the build job, buildah bud (the RUN step and the "
            "runtime layer, both pip installs from PyPI), push to the loopback registry, record the digest.",
            "Cache hit: pack and upload the same context; the scheduler answers the built image (no Nomad job).",
        ],
    }


def markdown(report: dict[str, Any]) -> list[str]:
    lines = ["# Image builds: cold and cache hit (embedded stack, buildah, loopback registry)", ""]
    if "skipped" in report:
        return [*lines, f"Skipped: {report['skipped']}."]
    cold, hit = report["cold_s"], report["cache_hit_s"]
    return [
        *lines,
        f"Runs: {report['runs']} (load average at the end: {report['machine'].get('load_average_1_5_15')}).",
        "",
        "| case | p50 s | min s | max s |",
        "|---|---|---|---|",
        f"| cold (new context, no layer reused) | {cold['p50']} | {cold['min']} | {cold['max']} |",
        f"| cache hit (same context, no Nomad job) | {hit['p50']} | {hit['min']} | {hit['max']} |",
        "",
        f"Cold / cache hit: {report['ratio_cold_to_cache_hit']}×.",
        "",
        *(f"- {note}" for note in report["notes"]),
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    reason = _skip_reason()
    report = {"benchmark": "image_build", "machine": machine(), "skipped": reason} if reason else run(max(1, args.runs))
    write_results("image_build", report, markdown(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
