"""Job bodies for the devcluster tests: small Python programs run by raw_exec with sys.executable."""

from __future__ import annotations

import sys
from typing import Any

MS = 1_000_000
S = 1_000_000_000

# Serves HTTP on NOMAD_PORT_http and prints the GPUs it was given.
HTTP_SERVER = (
    "import os, http.server\n"
    "print('GPUS=' + os.environ.get('NVIDIA_VISIBLE_DEVICES', ''), flush=True)\n"
    "srv = http.server.HTTPServer(('127.0.0.1', int(os.environ['NOMAD_PORT_http'])),"
    " http.server.SimpleHTTPRequestHandler)\n"
    "srv.serve_forever()\n"
)


def python_task(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"Name": name, "Driver": "raw_exec", "Config": {"command": sys.executable, "args": ["-u", "-c", code]},
            **extra}  # fmt: skip


def gpu_service_job(job_id: str, count: int = 1, gpus: int = 2, min_vram: str = "40 GiB") -> dict[str, Any]:
    """A service like the platform's chute job: GPUs with a memory constraint, a port, a Consul service."""
    device = {
        "Name": "nvidia/gpu",
        "Count": gpus,
        "Constraints": [{"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": min_vram}],
    }
    return {
        "ID": job_id,
        "Name": job_id,
        "Type": "service",
        "Datacenters": ["dc1"],
        "Meta": {"chute_id": job_id},
        "TaskGroups": [
            {
                "Name": "instance",
                "Count": count,
                "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http"}]}],
                "Services": [
                    {
                        "Name": job_id,
                        "PortLabel": "http",
                        "Tags": ["chutes", "user:alice"],
                        "Meta": {"chute": job_id},
                        "Provider": "consul",
                        "Checks": [
                            {"Name": "ready", "Type": "http", "Path": "/", "Interval": 200 * MS, "Timeout": 1 * S}
                        ],
                    }
                ],
                "RestartPolicy": {"Attempts": 0, "Mode": "fail", "Interval": 60 * S, "Delay": 100 * MS},
                "Tasks": [
                    python_task(
                        "runtime",
                        HTTP_SERVER,
                        Resources={"CPU": 100, "MemoryMB": 64, "Devices": [device]},
                        KillTimeout=2 * S,
                    )
                ],
            }
        ],
    }
