"""The devcluster as a process: SIGTERM leaves no orphans, restarts keep state, a crash is cleaned up, ACLs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import consul
import httpx
import nomad.api.exceptions
import pytest

from tests.devcluster.jobspecs import S, gpu_service_job, python_task
from tests.support.devcluster import DevclusterHandle, devcluster
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(90)

# A task that ignores SIGTERM and starts a grandchild in its process group: only SIGKILL of the group ends both.
STUBBORN = (
    "import os, signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
    "open(os.path.join(os.environ['NOMAD_TASK_DIR'], 'pids'), 'w').write(f'{os.getpid()} {child.pid}')\n"
    "time.sleep(600)\n"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _stubborn_pids(dc: DevclusterHandle, job_id: str) -> list[int]:
    n = dc.nomad()
    job = {"ID": job_id, "TaskGroups": [{"Name": "g", "Tasks": [python_task("t", STUBBORN, KillTimeout=S // 2)]}]}
    n.jobs.register_job({"Job": job})
    [alloc] = poll_until(lambda: n.job.get_allocations(job_id), "allocation")
    pid_file = dc.data_dir / "allocs" / alloc["ID"] / "t" / "local" / "pids"
    poll_until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the task's pid file")
    pids = [int(p) for p in pid_file.read_text().split()]
    assert all(_alive(p) for p in pids)
    return pids


def test_sigterm_stops_every_task_including_grandchildren() -> None:
    with devcluster(("gpu-a=h100_sxm:1",)) as dc:
        pids = _stubborn_pids(dc, "stubborn")
        started = time.monotonic()
        assert dc.stop() == 0
        # KillTimeout (0.5s) then SIGKILL of the whole process group.
        assert time.monotonic() - started < 10
        poll_until(lambda: not any(_alive(p) for p in pids), "no orphan task processes", timeout=5)


def test_kill_timeout_escalates_to_sigkill_on_job_stop(dc: DevclusterHandle) -> None:
    pids = _stubborn_pids(dc, "stubborn-stop")
    n = dc.nomad()
    n.job.deregister_job("stubborn-stop")
    poll_until(lambda: not any(_alive(p) for p in pids), "SIGKILL after KillTimeout", timeout=5)
    [alloc] = n.job.get_allocations("stubborn-stop")
    poll_until(
        lambda: n.allocation.get_allocation(alloc["ID"])["ClientStatus"] == "complete", "the allocation complete"
    )
    events = [e["Type"] for e in n.allocation.get_allocation(alloc["ID"])["TaskStates"]["t"]["Events"]]
    assert "Killing" in events and events[-1] == "Killed"
    n.job.deregister_job("stubborn-stop", purge=True)


def test_restart_keeps_kv_jobs_and_allocations_and_restarts_tasks(fresh_dc: DevclusterHandle) -> None:
    dc = fresh_dc
    n, c = dc.nomad(), dc.consul()
    c.kv.put("persist/me", "yes")
    c.agent.service.register("chutes-agent", service_id="chutes-agent-x", check=consul.Check.ttl("30s"))
    n.jobs.register_job({"Job": gpu_service_job("survivor", gpus=1)})
    poll_until(lambda: c.health.service("survivor", passing=True)[1], "passing before the restart")
    [before] = n.job.get_allocations("survivor")
    ports = (dc.nomad_port, dc.consul_port)

    dc.restart()
    assert (dc.nomad_port, dc.consul_port) == ports
    n, c = dc.nomad(), dc.consul()
    assert c.kv.get("persist/me")[1]["Value"] == b"yes"
    assert "chutes-agent-x" in c.agent.services()
    assert n.job.get_job("survivor")["Status"] == "running"
    [after] = n.job.get_allocations("survivor")
    assert after["ID"] == before["ID"], "the allocation survives; its task is started again"
    [entry] = poll_until(lambda: c.health.service("survivor", passing=True)[1], "passing after the restart")
    assert entry["Service"]["ID"].startswith(f"_nomad-task-{before['ID']}-")
    events = [e["Type"] for e in n.allocation.get_allocation(after["ID"])["TaskStates"]["runtime"]["Events"]]
    assert "Restarting" in events


def test_a_crashed_devcluster_leaves_tasks_that_the_next_start_reaps(fresh_dc: DevclusterHandle) -> None:
    pids = _stubborn_pids(fresh_dc, "orphaned")
    fresh_dc.kill()
    assert all(_alive(p) for p in pids), "SIGKILL gives the devcluster no chance to stop its tasks"
    fresh_dc.start()
    poll_until(lambda: not any(_alive(p) for p in pids), "the restart to reap leftover groups", timeout=5)
    n = fresh_dc.nomad()
    [alloc] = n.job.get_allocations("orphaned")
    assert alloc["DesiredStatus"] == "run"
    n.job.deregister_job("orphaned", purge=True)


def test_acl_tokens_are_required_when_configured() -> None:
    with devcluster(("gpu-a=a10:1",), local_node=False, nomad_token="n-secret", consul_token="c-secret") as dc:
        with pytest.raises(nomad.api.exceptions.URLNotAuthorizedNomadException):
            dc.nomad().jobs.get_jobs()
        with pytest.raises(nomad.api.exceptions.URLNotAuthorizedNomadException):
            dc.nomad(token="wrong").jobs.get_jobs()
        assert dc.nomad(token="n-secret").jobs.get_jobs() == []
        bearer = httpx.get(f"{dc.nomad_addr}/v1/nodes", headers={"Authorization": "Bearer n-secret"})
        assert bearer.status_code == 200 and len(bearer.json()) == 1
        with pytest.raises(consul.ACLPermissionDenied):
            dc.consul().kv.put("k", "v")
        assert dc.consul(token="c-secret").kv.put("k", "v")


def test_cli_rejects_bad_node_specs_with_a_message(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "chutes.devcluster.cli", "--node", "gpu-a=h900:8", "--data-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "unknown GPU model 'h900'" in out.stderr and "Traceback" not in out.stderr


def test_cli_prints_ports_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    ports_file = tmp_path / "ports.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chutes.devcluster.cli",
            "--nomad-port",
            "0",
            "--consul-port",
            "0",
            "--ports-file",
            str(ports_file),
            "--node",
            "gpu-a=h100_sxm:2",
            "--no-gpu-probe",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip  (no tasks: no process group to stop; stdout is what is tested)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        printed = json.loads(line)
        assert printed == json.loads(ports_file.read_text())
        assert httpx.get(f"http://127.0.0.1:{printed['nomad']}/v1/status/leader").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
