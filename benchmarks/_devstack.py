"""The embedded stack for benchmarks: what ``chutes dev`` runs (devcluster, agents, scheduler, gateway), as
``chutes.dev.stack.DevStack`` starts it, with its defaults; plus small helpers the benchmarks share.

Not a benchmark itself (the leading underscore keeps ``python -m benchmarks`` from running it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from chutes.client import Client
from chutes.dev.containers import ContainersMode
from chutes.dev.registry import BuildsMode
from chutes.dev.stack import DevStack, StackInfo

REPO = Path(__file__).resolve().parent.parent
_ASCTIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


@dataclass
class Embedded:
    stack: DevStack
    info: StackInfo
    admin_key: str

    def client(self, key: str | None = None, **kwargs: Any) -> Client:
        return Client(self.info.api_url, key or self.info.api_key, gateway_url=self.info.gateway_url, **kwargs)

    def consul_passing(self, chute_id: str) -> list[dict[str, Any]]:
        url = f"{self.info.consul_addr}/v1/health/service/chute-{chute_id}?passing=1"
        result: list[dict[str, Any]] = httpx.get(url, headers=self.consul_headers(), timeout=5).json()
        return result

    def consul_headers(self) -> dict[str, str]:
        """The devcluster's Consul management token (its APIs always run with ACLs under ``chutes dev``)."""
        return {"X-Consul-Token": self.info.consul_token}

    def nomad_headers(self) -> dict[str, str]:
        return {"X-Nomad-Token": self.info.nomad_token}

    def pid_of(self, name: str) -> int:
        """The process id of one part of the stack: devcluster, scheduler, gateway, agent-<node>."""
        for child in self.stack.children:
            if child.name == name and child.pid is not None:
                return child.pid
        raise KeyError(f"no {name} in the stack ({[c.name for c in self.stack.children]})")


@contextlib.contextmanager
def embedded_stack(
    containers: ContainersMode = "off", env: dict[str, str] | None = None, builds: BuildsMode = "off"
) -> Iterator[Embedded]:
    """The dev stack on simulated nodes (default nodes, no local GPUs), in a temporary data directory.

    Instances are host processes unless ``containers`` says otherwise (the figures of the other benchmarks
    are for processes), and without image builds unless ``builds`` says otherwise; ``env`` is added to the
    parts' environment."""
    # The parts inherit this environment: nothing of an outer cluster or dev session may leak into them.
    for var in [v for v in os.environ if v.startswith(("CHUTES_", "NOMAD_", "CONSUL_"))]:
        del os.environ[var]
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    stack = DevStack(use_local_gpus=False, echo=lambda _: None, timeout=120, containers=containers, builds=builds)
    try:
        try:
            info = stack.start()
        finally:  # the parts have it; a second stack in this process must not
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        secrets = json.loads((stack.data_dir / "secrets.json").read_text())
        yield Embedded(stack, info, secrets["admin_key"])
    finally:
        stack.stop()


def chute_copy(workdir: Path, source: Path, name: str, new_name: str) -> str:
    """``source`` with its chute renamed (a fresh chute per run); returns ``FILE:chute``."""
    text = source.read_text()
    renamed = text.replace(f'name="{name}"', f'name="{new_name}"')  # the chute (and its image)
    assert renamed != text, f"no name={name!r} in {source}"
    path = workdir / f"{new_name.replace('-', '_')}.py"
    path.write_text(renamed)
    return f"{path}:chute"


def log_time(line: str) -> float | None:
    """The UNIX time of a log line that starts with Python logging's default asctime (local time, ms)."""
    match = _ASCTIME.match(line)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def distribution(values: list[float], digits: int = 3) -> dict[str, float]:
    return {
        "n": len(values),
        "min": round(min(values), digits),
        "p50": round(percentile(values, 0.5), digits),
        "mean": round(sum(values) / len(values), digits),
        "p90": round(percentile(values, 0.9), digits),
        "p99": round(percentile(values, 0.99), digits),
        "max": round(max(values), digits),
    }
