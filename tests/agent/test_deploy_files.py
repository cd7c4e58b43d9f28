"""The systemd unit and the Nomad system job that run the agent."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "agent" / "systemd" / "chutes-agent.service"
JOB = ROOT / "jobs_hcl" / "chutes-agent.nomad.hcl"


def unit_entries() -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; systemd allows repeated keys, configparser does not."""
    section, out = "", []
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def test_unit_restarts_always_and_hardens_but_allows_the_nvidia_devices() -> None:
    service = {}
    allowed = []
    for section, key, value in unit_entries():
        if section == "Service":
            service[key] = value
            if key == "DeviceAllow":
                allowed.append(value)
    assert service["Restart"] == "always"
    assert service["KillSignal"] == "SIGTERM"
    assert "chutes-agent run" in service["ExecStart"]
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == ""
    assert service["PrivateDevices"] == "no" and service["DevicePolicy"] == "closed"
    assert "char-nvidia* rw" in allowed
    with pytest.raises(configparser.Error):  # sanity: the repeated DeviceAllow keys are why we parse by hand
        configparser.ConfigParser(strict=True).read_string(UNIT.read_text())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    agent = Path(sys.executable).parent / "chutes-agent"
    unit = tmp_path / "chutes-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/chutes/venv/bin/chutes-agent", str(agent)))
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line for line in verify.stderr.splitlines() if line.strip() and "container" not in line.lower()
    ]  # a container host adds notes about itself
    assert verify.returncode == 0 and not problems, verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
    )
    exposure = re.search(r"Overall exposure level for chutes-agent.service: ([\d.]+)", security.stdout)
    assert exposure is not None, security.stdout[-500:] + security.stderr
    assert float(exposure.group(1)) <= 3.0  # systemd's scale: 0 safe ... 10 exposed; "OK" is below 4


def _block(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in items:
        for key, value in item.items():
            if key.strip('"') == name:
                return value  # type: ignore[no-any-return]
    raise KeyError(name)


def test_nomad_job_is_a_system_job_with_raw_exec_and_no_gpu_reservation() -> None:
    doc = hcl2.load(JOB.open())
    job = _block(doc["job"], "chutes-agent")
    assert job["type"].strip('"') == "system"
    task = _block(_block(job["group"], "agent")["task"], "agent")
    assert task["driver"].strip('"') == "raw_exec"
    assert task["kill_signal"].strip('"') == "SIGTERM"
    resources = task["resources"][0]
    assert "device" not in resources  # a device block would take GPUs away from chutes
    env = {k: v.strip('"') for k, v in task["env"][0].items() if not k.startswith("__")}
    assert env["CHUTES_NODE_ID"] == "${node.unique.name}"
    assert env["CHUTES_NOMAD_NODE_ID"] == "${node.unique.id}"
    args = [a.strip('"') for a in task["config"][0]["args"]]
    assert args[0] == "run" and "--metrics-port" in args
