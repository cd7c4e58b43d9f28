"""``chutes-agent probe`` through the installed console script, as an operator runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chutes.core.inventory import NodeInventory, simulated_gpus

AGENT = shutil.which("chutes-agent", path=str(Path(sys.executable).parent)) or "chutes-agent"


def run_agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_", "CONSUL_"))}
    return subprocess.run(
        [AGENT, *args], capture_output=True, text=True, timeout=60, env={**base, **(env or {})}, check=False
    )


def test_probe_simulate_h100_sxm_8_json() -> None:
    result = run_agent("probe", "--simulate", "h100_sxm:8", "--json", "--node-id", "gpu-node-1")
    assert result.returncode == 0, result.stderr
    inv = NodeInventory.model_validate_json(result.stdout)
    assert inv.node_id == "gpu-node-1"
    assert len(inv.gpus) == 8
    assert {g.model for g in inv.gpus} == {"h100_sxm"}
    assert {g.memory_total_mib for g in inv.gpus} == {81559}
    assert all(g.healthy for g in inv.gpus)
    # The devcluster's simulated node of the same id carries the same GPU UUIDs.
    assert [g.uuid for g in inv.gpus] == [g.uuid for g in simulated_gpus("gpu-node-1", "h100_sxm", 8)]
    # DESIGN.md field names are all there.
    raw = json.loads(result.stdout)
    assert {"node_id", "hostname", "nomad_node_id", "driver_version", "cuda_version", "gpus", "updated_at"} <= set(raw)
    assert {"index", "uuid", "name", "model", "memory_total_mib", "memory_used_mib", "utilization_pct",
            "temperature_c", "power_w", "ecc_errors", "healthy"} <= set(raw["gpus"][0])  # fmt: skip


def test_probe_table_and_env_configuration() -> None:
    result = run_agent("probe", env={"CHUTES_AGENT_SIMULATE": "a100_sxm:2,l40s", "CHUTES_NODE_ID": "n7"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("node n7 ")
    assert len(lines) == 4
    assert "a100_sxm" in lines[1] and "l40s" in lines[3] and "healthy" in lines[3]


def test_probe_without_a_gpu_says_so_and_exits_1() -> None:
    # The test machines have no NVIDIA driver; on a GPU host this test would see GPUs instead.
    result = run_agent("probe", "--json")
    if result.returncode == 0:
        pytest.skip("this machine has an NVIDIA GPU")
    assert result.returncode == 1
    assert "no NVIDIA GPU found" in result.stderr
    assert "Traceback" not in result.stderr
    assert NodeInventory.model_validate_json(result.stdout).gpus == []


def test_probe_reports_unhealthy_gpus_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "node.yaml"
    f.write_text("gpus:\n  - {model: h100_sxm, count: 2}\n  - {model: h100_sxm, ecc_errors: 4}\n")
    result = run_agent("probe", "--simulate-file", str(f))
    assert result.returncode == 0
    assert "UNHEALTHY: 4 volatile uncorrected ECC error(s)" in result.stdout
    assert "1 of 3 GPU(s) unhealthy" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--simulate", "h100:many"], "COUNT must be a whole number"),
        (["--simulate", "z100"], "unknown GPU id 'z100'"),
        (["--simulate", "h100", "--simulate-file", "x.yaml"], "either --simulate or --simulate-file"),
        (["--simulate-file", "/nonexistent/node.yaml"], "cannot read simulation file"),
        (["--simulate", "h100", "--nomad-addr", "ftp://x"], "scheme must be http or https"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run_agent("probe", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_run_rejects_a_heartbeat_longer_than_the_ttl() -> None:
    result = run_agent("run", "--simulate", "l4", "--heartbeat", "20", "--ttl", "15")
    assert result.returncode == 2
    assert "must be shorter than --ttl" in result.stderr
