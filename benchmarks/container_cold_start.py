"""Cold start of a container instance next to a process instance: deploy → first answer, as ratios in one run.

    python -m benchmarks.container_cold_start [--runs 3]

Two embedded stacks run side by side (what ``chutes dev`` runs): one with ``--containers off`` (instances are
host processes, raw_exec) and one with ``--containers on`` and ``CHUTES_TASK_DRIVER=docker`` (instances are
podman containers of the chute's image, by digest). The image is this checkout's runtime on
``localhost/chutes-base:bookworm`` (the tests' image, tests/support/containers.py), pushed to a docker-registry
on loopback. The container stack's podman uses a storage of its own, so "not pulled" is a real first pull of
every layer from the registry, and "pulled" starts from a local image.

Each round deploys a fresh copy of the same one-cord chute three times (container not pulled, container
pulled, process), each time from the click to the first 200 through the gateway, and deletes it. Reported:
medians per case and the ratios container/process; for the not-pulled case also the pull (Nomad task events
``Driver: Downloading image`` → ``Started``). Skipped, with the reason, where podman, buildah, docker-registry
or the base image are missing. Loopback only. Writes JSON and markdown to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._devstack import Embedded, distribution, embedded_stack
from benchmarks.report import machine, write_results
from tests.support.containers import (
    BASE_IMAGE,
    containers_missing,
    ensure_containers_conf,
    local_registry,
    private_storage,
    runtime_image,
)
from tests.support.polling import poll_until

CASES = ("container, not pulled", "container, pulled", "process")
CHUTE = """
import os

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="demo",
    name="{name}",
    image="{image}",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),
)


@chute.cord(public_api_path="/hello")
async def hello(self: Chute) -> dict[str, object]:
    return {{"pid": os.getpid()}}
"""


def _skip_reason() -> str | None:
    reason = containers_missing()
    if reason is not None:
        return reason
    ensure_containers_conf()
    if subprocess.run(["podman", "image", "exists", BASE_IMAGE], capture_output=True).returncode != 0:
        return f"the base image {BASE_IMAGE} is not in local storage (make base-image builds it)"
    return None


def _first_answer(es: Embedded, name: str, deadline_s: float = 300) -> float:
    """Call the chute's cord through the gateway until it answers 200; the UNIX time of that answer."""
    url = f"{es.info.gateway_url}/{es.info.username}/{name}/hello"
    headers = {"Authorization": f"Bearer {es.info.api_key}"}
    deadline = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < deadline:
        try:
            resp = httpx.post(url, json={}, headers=headers, timeout=deadline_s)
        except httpx.HTTPError as exc:
            last = repr(exc)
        else:
            if resp.status_code == 200:
                return time.time()
            last = f"{resp.status_code} {resp.text[:200]}"
        time.sleep(0.01)
    raise RuntimeError(f"{name} never answered: {last}")


def _pull_seconds(es: Embedded, chute_id: str) -> float | None:
    nomad, headers = es.info.nomad_addr, es.nomad_headers()
    allocs = httpx.get(f"{nomad}/v1/job/chute-{chute_id}/allocations", headers=headers, timeout=5).json()
    alloc = httpx.get(f"{nomad}/v1/allocation/{allocs[0]['ID']}", headers=headers, timeout=5).json()
    events = {e["DisplayMessage"] if e["Type"] == "Driver" else e["Type"]: e["Time"] / 1e9
              for e in alloc["TaskStates"]["runtime"]["Events"]}  # fmt: skip
    if "Downloading image" not in events or "Started" not in events:
        return None
    return float(events["Started"] - events["Downloading image"])


def one_deploy(es: Embedded, workdir: Path, name: str, image: str) -> dict[str, Any]:
    source = workdir / f"{name.replace('-', '_')}.py"
    source.write_text(CHUTE.format(name=name, image=image))
    clicked = time.time()
    with es.client(timeout=300) as client:
        chute_id = str(client.deploy(f"{source}:chute")["chute_id"])
    answered = _first_answer(es, name)
    pull = _pull_seconds(es, chute_id)
    with es.client() as client:
        client.delete_chute(chute_id)
    poll_until(lambda: not es.consul_passing(chute_id), "the chute gone from Consul", 120, 0.1)
    return {"chute": name, "total_s": round(answered - clicked, 3), "pull_s": None if pull is None else round(pull, 3)}


def _forget_image(image: str) -> None:
    """Remove the image from the container stack's storage (its own), so that the next start pulls every layer."""
    subprocess.run(["podman", "rmi", "--force", image], capture_output=True, timeout=120)
    listed = subprocess.run(["podman", "images", "--quiet"], capture_output=True, text=True, timeout=60).stdout
    if listed.split():
        raise RuntimeError(f"images left in the benchmark's own storage after removing {image}: {listed.split()}")


def run(runs: int) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="container-cold-")))
        registry = stack.enter_context(local_registry(tmp / "registry"))
        image = runtime_image(registry)  # built in (or reused from) the default storage, then pushed
        stack.enter_context(private_storage(tmp / "storage"))
        processes = stack.enter_context(embedded_stack(containers="off"))
        containers = stack.enter_context(embedded_stack(containers="on", env={"CHUTES_TASK_DRIVER": "docker"}))
        if not containers.info.containers:
            raise RuntimeError("the container stack did not turn containers on")
        results: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
        for n in range(1, runs + 1):
            _forget_image(image)
            results[CASES[0]].append(one_deploy(containers, tmp, f"cold-image{n}", image))
            results[CASES[1]].append(one_deploy(containers, tmp, f"warm-image{n}", image))
            results[CASES[2]].append(one_deploy(processes, tmp, f"process{n}", image))
        size = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True, text=True
        ).stdout.strip()
    totals = {case: distribution([r["total_s"] for r in rs]) for case, rs in results.items()}
    pulls = [r["pull_s"] for r in results[CASES[0]] if r["pull_s"] is not None]
    process = totals["process"]["p50"]
    return {
        "benchmark": "container_cold_start",
        "machine": machine(),
        "image": image,
        "image_bytes": int(size) if size.isdigit() else None,
        "runs": results,
        "total_s": totals,
        "pull_s": distribution(pulls) if pulls else None,
        "ratios_to_process": {case: round(totals[case]["p50"] / process, 2) if process else None for case in CASES[:2]},
        "notes": [
            "Same chute and stack code in every case. The container cases add the image pull (not pulled) and "
            "podman create + start with slirp4netns port forwarding (about 0.5 s on this machine).",
            "The process case runs the runtime from the development virtualenv (a strict editable install), the "
            "container cases from a regular install in the image; importing chutes.runtime is slower from the "
            "former (1.6-2.0 s against 1.1-1.5 s, measured separately with `python -c 'import chutes.runtime.cli'`"
            " on this machine), which is why a pulled container can answer before a process.",
            "The registry is on loopback: pulling over a network adds the transfer of the image's layers; the "
            "not-pulled figure is mostly unpacking them (the image's size is above).",
        ],
    }


def skipped(reason: str) -> dict[str, Any]:
    return {"benchmark": "container_cold_start", "machine": machine(), "skipped": reason}


def markdown(report: dict[str, Any]) -> list[str]:
    lines = ["# Cold start: container instance vs process instance (deploy → first answer, embedded stack)", ""]
    if "skipped" in report:
        return [*lines, f"Skipped: {report['skipped']}."]
    lines += [
        f"Image: this checkout's runtime on {BASE_IMAGE} ({(report['image_bytes'] or 0) / 1e6:.0f} MB), "
        "from a docker-registry on loopback.",
        "",
        "| case | p50 s | mean s | min s | max s | ratio to process (p50) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case, d in report["total_s"].items():
        ratio = report["ratios_to_process"].get(case)
        lines.append(
            f"| {case} | {d['p50']} | {d['mean']} | {d['min']} | {d['max']} | {'1.00' if ratio is None else ratio} |"
        )
    if report["pull_s"]:
        lines += ["", f"Image pull in the not-pulled case: p50 {report['pull_s']['p50']} s."]
    lines += ["", *[f"- {note}" for note in report["notes"]]]
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    reason = _skip_reason()
    report = skipped(reason) if reason else run(args.runs)
    write_results("container_cold_start", report, markdown(report))
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
