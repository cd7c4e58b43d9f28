"""Chutes in containers end to end: ``chutes dev --containers on``, the installed CLI, the runtime in an image.

The chute's image is this checkout's runtime on ``localhost/chutes-base:bookworm`` (tests/support/containers.py),
pushed to a docker-registry on a free loopback port; the scheduler is told ``CHUTES_TASK_DRIVER=docker``, so the
chute runs that image by digest (until images are built by the platform, a chute has no built image of its own).

- Inside its container a chute finds no platform key or cluster token, and the devcluster's APIs refuse it.
- Kill one instance's container from outside while calls flow: Consul marks it critical, the gateway stops
  routing to it, the restart policy starts a new container, and no call fails while the second instance serves.
- A secret created with ``chutes secrets create`` is in the container's environment (the job's template).
- Scale to zero, ``chutes chutes delete`` and a stopped ``chutes dev`` leave no container and no allocation.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chutes.devcluster.nomad.container_spec import LABEL_ALLOC, LABEL_OWNER
from chutes.devcluster.nomad.podman import owner_id
from tests.support.containers import containers_labelled, local_registry, require_containers, runtime_image
from tests.support.polling import poll_until
from tests.support.processes import processes_mentioning, terminate, wait_written

pytestmark = [pytest.mark.e2e, pytest.mark.containers, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
CHUTES = str(Path(sys.executable).parent / "chutes")

CHUTE = """
import hashlib
import os
import socket
from pathlib import Path

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="demo",
    name="boxed",
    image="{image}",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),
    concurrency=8,
    max_instances=2,
)


@chute.cord(public_api_path="/where")
async def where(self: Chute) -> dict[str, object]:
    marker = Path("/etc/chutes-test-image")
    return {{
        "hostname": socket.gethostname(),
        "marker": marker.read_text().strip() if marker.exists() else None,
        "alloc": os.environ.get("NOMAD_ALLOC_ID"),
        "env": dict(os.environ),
        "hf_sha256": hashlib.sha256(os.environ.get("HF_TOKEN", "").encode()).hexdigest(),
    }}


@chute.cord(public_api_path="/reach")
async def reach(self: Chute, url: str = "") -> dict[str, object]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return {{"status": resp.status}}
    except urllib.error.HTTPError as exc:
        return {{"status": exc.code}}
    except OSError as exc:
        return {{"status": 0, "error": str(exc)}}
"""

JOB_CHUTE = """
import socket
from pathlib import Path

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="demo",
    name="boxed-job",
    image="{image}",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),
)


@chute.job(timeout=120, upload=True)
async def probe(self: Chute, output_dir: str = ".") -> dict[str, object]:
    marker = Path("/etc/chutes-test-image").read_text().strip()
    (Path(output_dir) / "inside.txt").write_text(marker + " " + socket.gethostname() + "\\n")
    (Path(output_dir) / "nested").mkdir()
    (Path(output_dir) / "nested" / "blob.bin").write_bytes(bytes(range(256)) * 1024)
    return {{"marker": marker}}


@chute.job(timeout=120, upload=True)
async def crash(self: Chute, output_dir: str = ".") -> None:
    (Path(output_dir) / "partial.txt").write_text("written before the failure in " + socket.gethostname())
    raise ValueError("no such dataset inside the image")
"""

BROKEN_CHUTE = """
from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="demo",
    name="boxed-broken",
    image="{image}",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),
)


@chute.on_startup()
async def load(self: Chute) -> None:
    import package_not_in_the_image  # noqa: F401


@chute.cord(public_api_path="/ping")
async def ping(self: Chute) -> dict[str, object]:
    return {{}}
"""


class Stack:
    """A running ``chutes dev`` and the calls the test makes around it."""

    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, Any], env: dict[str, str], log: Path) -> None:
        self.proc, self.info, self.env, self.log = proc, info, env, log
        self.owner = owner_id(Path(info["data_dir"]) / "devcluster")

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CHUTES, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def nomad(self, path: str) -> Any:
        headers = {"X-Nomad-Token": self.info["nomad_token"]}
        return httpx.get(f"{self.info['nomad_addr']}{path}", headers=headers, timeout=10).json()

    def consul(self, path: str) -> Any:
        headers = {"X-Consul-Token": self.info["consul_token"]}
        return httpx.get(f"{self.info['consul_addr']}{path}", headers=headers, timeout=10).json()

    def call(self, timeout: float = 30) -> httpx.Response:
        url = f"{self.info['gateway_url']}/demo/boxed/where"
        return httpx.post(url, json={}, headers={"Authorization": f"Bearer {self.info['api_key']}"}, timeout=timeout)

    def gateway_failed_exchanges(self) -> float:
        """Failed exchanges with instances and calls sent on to another instance, as the gateway counts them."""
        text = httpx.get(f"{self.info['gateway_url']}/metrics", timeout=10).text
        names = ("chutes_gateway_retries_total", "chutes_gateway_upstream_errors_total")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(names))

    def passing(self, chute_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.consul(f"/v1/health/service/chute-{chute_id}?passing=1")
        return result

    def containers(self) -> list[str]:
        return containers_labelled(LABEL_OWNER, self.owner)

    def live_allocs(self, chute_id: str) -> list[dict[str, Any]]:
        allocs = self.nomad(f"/v1/job/chute-{chute_id}/allocations")
        return [a for a in allocs if a["ClientStatus"] in ("pending", "running")]

    def any_live_alloc(self, job_id: str) -> list[str]:
        """Allocations of ``job_id`` that still run or are to run, from the cluster-wide list (a purged job's
        allocations are not under /v1/job/... any more)."""
        allocs = self.nomad("/v1/allocations")
        return [a["ID"] for a in allocs if a["JobID"] == job_id and a["ClientStatus"] in ("pending", "running")]

    def instances(self, chute_id: str) -> list[dict[str, Any]]:
        """Instances registered in Consul, passing or not."""
        result: list[dict[str, Any]] = self.consul(f"/v1/health/service/chute-{chute_id}")
        return result

    def job_status(self, chute_id: str) -> int:
        headers = {"X-Nomad-Token": self.info["nomad_token"]}
        return httpx.get(f"{self.info['nomad_addr']}/v1/job/chute-{chute_id}", headers=headers, timeout=10).status_code

    def processes(self) -> list[int]:
        """PIDs of the stack's processes: each part's command line or environment names the data directory."""
        return processes_mentioning(self.info["data_dir"])


@pytest.fixture
def registry_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_containers()
    with local_registry(tmp_path_factory.mktemp("registry")) as registry:
        yield runtime_image(registry)


@pytest.fixture
def stack(tmp_path: Path, registry_image: str) -> Iterator[Stack]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_", "CONSUL_HTTP_"))}
    env.update(CHUTES_CONFIG=str(tmp_path / "config.ini"), COLUMNS="200", CHUTES_TASK_DRIVER="docker")
    ready, log_path = tmp_path / "ready.json", tmp_path / "dev.log"
    argv = [CHUTES, "dev", "--simulate", "--containers", "on", "--data-dir", str(tmp_path / "data")]
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*argv, "--ready-file", str(ready)], env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        wait_written(ready, proc, "chutes dev up", 180, log_path)
        info = json.loads(ready.read_text())
        assert info["containers"] is True and info["nomad_token"], info
        assert "containers: on (podman" in log_path.read_text()
        yield Stack(proc, info, env, log_path)
    finally:
        terminate(proc, 90)


def test_killed_container_restarts_without_failed_calls_and_nothing_outlives_its_chute(
    stack: Stack, registry_image: str, tmp_path: Path
) -> None:
    source = tmp_path / "boxed.py"
    source.write_text(CHUTE.format(image=registry_image))
    secret = "hf_in-a-container-" + "x" * 20
    created = stack.cli("secrets", "create", "HF_TOKEN", "--chute", "boxed", "--value", secret)
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = stack.cli("deploy", f"{source}:chute", "--timeout", "180")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    chute_id = json.loads(stack.cli("chutes", "get", "boxed", "--json").stdout)["chute_id"]

    # It answers from inside its image: the marker only the image has, a hostname that is not the host's, and
    # the secret its template rendered from the job's Nomad Variable (which the job itself does not carry).
    first = stack.call()
    assert first.status_code == 200, first.text
    assert first.json()["marker"] == "chutes-test-image"
    assert first.json()["hostname"] != os.uname().nodename
    # Nothing of the platform's reaches the container: no key or cluster token in its environment, and the
    # devcluster's APIs (on the host's loopback, which a container reaches) refuse it without one.
    stored = json.loads((Path(stack.info["data_dir"]) / "secrets.json").read_text())
    platform = {k: v for k, v in stored.items() if k.endswith(("_key", "_token"))}  # keys and cluster tokens
    assert {"admin_key", "gateway_key", "nomad_token", "consul_token"} <= set(platform), sorted(stored)
    env = first.json()["env"]
    leaked = {k for k, v in env.items() if v in platform.values() or k in ("NOMAD_TOKEN", "CONSUL_HTTP_TOKEN")}
    assert not leaked, sorted(leaked)
    for api, path in (("nomad_addr", "/v1/jobs"), ("consul_addr", "/v1/kv/chutes/nodes/gpu-a")):
        url = f"http://host.containers.internal:{stack.info[api].rsplit(':', 1)[1]}{path}"
        reached = httpx.post(
            f"{stack.info['gateway_url']}/demo/boxed/reach", json={"url": url}, timeout=30,
            headers={"Authorization": f"Bearer {stack.info['api_key']}"},
        )  # fmt: skip
        assert reached.status_code == 200 and reached.json() == {"status": 403}, (api, reached.text)
    assert first.json()["hf_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    job = stack.nomad(f"/v1/job/chute-{chute_id}")
    assert job["TaskGroups"][0]["Tasks"][0]["Driver"] == "docker" and secret not in json.dumps(job)

    scaled = stack.cli("chutes", "scale", "boxed", "2")
    assert scaled.returncode == 0, scaled.stderr
    poll_until(lambda: len(stack.passing(chute_id)) == 2, "two passing instances", timeout=120, interval=0.2)

    # Calls flow through the gateway while one instance's container is killed from outside.
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            url = f"{stack.info['gateway_url']}/demo/boxed/where"
            headers = {"Authorization": f"Bearer {stack.info['api_key']}"}
            while not stop.is_set():
                try:
                    resp = client.post(url, json={}, headers=headers)
                    results.append(
                        (resp.status_code, resp.json().get("alloc", "") if resp.status_code == 200 else resp.text)
                    )
                except httpx.HTTPError as exc:
                    results.append((0, repr(exc)))
                time.sleep(0.02)

    caller = threading.Thread(target=load, daemon=True)
    caller.start()
    try:
        victim = stack.live_allocs(chute_id)[0]["ID"]
        [container] = containers_labelled(LABEL_ALLOC, victim)
        subprocess.run(["podman", "kill", container], check=True, capture_output=True)
        killed_at = len(results)

        def victim_critical() -> bool:
            checks = stack.consul(f"/v1/health/checks/chute-{chute_id}")
            return any(victim in c["ServiceID"] and c["Status"] == "critical" for c in checks)

        poll_until(victim_critical, "Consul marking the killed instance critical", timeout=20, interval=0.05)
        critical_at = len(results)
        time.sleep(2)  # the gateway's Consul watch follows within this
        failed_before = stack.gateway_failed_exchanges()
        # Restarted in place by the restart policy (same allocation, one restart), and passing again.
        poll_until(lambda: len(stack.passing(chute_id)) == 2, "the killed instance back", timeout=120, interval=0.2)
        # While it was critical the gateway sent it nothing (an exchange with it would have failed).
        assert stack.gateway_failed_exchanges() == failed_before
        alloc = stack.nomad(f"/v1/allocation/{victim}")
        assert alloc["ClientStatus"] == "running" and alloc["TaskStates"]["runtime"]["Restarts"] == 1
        time.sleep(1)
    finally:
        stop.set()
        caller.join(60)
    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(results)} calls failed: {failed[:5]}"
    # Once Consul had it critical, the gateway sent nothing to the killed instance until it was back.
    served_after_critical = {alloc for _, alloc in results[critical_at : critical_at + 20]}
    assert served_after_critical and victim not in served_after_critical, served_after_critical
    assert len(results) > killed_at + 20

    # Scale to zero (what the autoscaler does for an idle chute, through the same deploy.set_desired): no
    # allocation runs, no container is left, no instance stays in Consul; the next call wakes it again.
    assert stack.cli("chutes", "scale", "boxed", "0").returncode == 0
    poll_until(
        lambda: not stack.live_allocs(chute_id) and not stack.containers(), "nothing running", timeout=120, interval=0.2
    )
    poll_until(lambda: not stack.instances(chute_id), "no instance in Consul", timeout=30, interval=0.2)
    assert stack.cli("chutes", "scale", "boxed", "1").returncode == 0
    poll_until(lambda: len(stack.passing(chute_id)) == 1, "running again", timeout=120, interval=0.2)
    assert stack.call().status_code == 200

    # Delete: the job goes, its allocations stop, its containers are removed.
    deleted = stack.cli("chutes", "delete", "boxed", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    poll_until(
        lambda: not stack.live_allocs(chute_id) and not stack.containers(), "nothing left", timeout=120, interval=0.2
    )
    assert stack.job_status(chute_id) == 404  # purged
    assert stack.any_live_alloc(f"chute-{chute_id}") == [] and stack.instances(chute_id) == []

    # A job runs in the image too, and its output is uploaded to the scheduler from inside the container.
    job_source = tmp_path / "boxed_job.py"
    job_source.write_text(JOB_CHUTE.format(image=registry_image))
    deployed = stack.cli("deploy", f"{job_source}:chute", "--timeout", "180")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    ran = stack.cli("jobs", "run", "boxed-job", "probe", "--input", "{}", "--timeout", "180", "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run = json.loads(ran.stdout)
    assert run["result"] == {"marker": "chutes-test-image"}, run
    output = stack.cli("jobs", "output", run.get("run_id") or run["id"], "inside.txt")
    assert output.returncode == 0 and output.stdout.startswith("chutes-test-image "), output.stdout + output.stderr
    assert output.stdout.split()[1] != os.uname().nodename
    blob = stack.cli("jobs", "output", run.get("run_id") or run["id"], "nested/blob.bin", "-o", str(tmp_path / "b"))
    assert blob.returncode == 0, blob.stdout + blob.stderr
    assert (tmp_path / "b").read_bytes() == bytes(range(256)) * 1024  # a file in a subfolder, byte for byte
    poll_until(lambda: not stack.containers(), "the job's container removed", timeout=60, interval=0.2)
    # A job that fails in its container: exit 1, the error, and what it wrote before failing is uploaded too.
    crashed = stack.cli("jobs", "run", "boxed-job", "crash", "--input", "{}", "--timeout", "180", "--json")
    assert crashed.returncode == 1, crashed.stdout + crashed.stderr
    failure = json.loads(crashed.stdout)
    assert failure["status"] == "failed" and "ValueError: no such dataset inside the image" in failure["error"]
    partial = stack.cli("jobs", "output", failure.get("run_id") or failure["id"], "partial.txt")
    assert partial.returncode == 0 and partial.stdout.startswith("written before the failure in "), partial.stderr
    poll_until(lambda: not stack.containers(), "the failed job's container removed", timeout=60, interval=0.2)
    job_chute = json.loads(stack.cli("chutes", "get", "boxed-job", "--json").stdout)["chute_id"]
    runs = [a for a in stack.nomad("/v1/allocations") if a["JobID"].startswith(f"chute-{job_chute}")]
    assert len(runs) >= 2 and all(a["ClientStatus"] in ("complete", "failed") for a in runs), runs

    # A stopped `chutes dev` leaves no container either, even with an instance running when it stops.
    again = stack.cli("deploy", f"{source}:chute", "--timeout", "180")
    assert again.returncode == 0, again.stdout + again.stderr
    assert stack.containers(), "the redeployed chute should run in a container"
    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(90) == 0, stack.log.read_text()[-3000:]
    assert stack.containers() == []
    poll_until(lambda: not stack.processes(), "no process of the stack left", timeout=30, interval=0.2)


def test_a_chutes_dev_killed_hard_leaves_no_container_and_no_process(
    stack: Stack, registry_image: str, tmp_path: Path
) -> None:
    """A chute whose code needs what its image lacks fails with the reason in `chutes logs`; the logs of a
    container instance come through the same command. Then SIGKILL of `chutes dev` itself (a crash, an OOM
    kill): its parts get the parent-death signal, the devcluster stops its containers, and nothing of the stack
    is left running."""
    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN_CHUTE.format(image=registry_image))
    deployed = stack.cli("deploy", f"{broken}:chute", "--timeout", "45")
    assert deployed.returncode != 0, deployed.stdout + deployed.stderr
    missing = "ModuleNotFoundError: No module named 'package_not_in_the_image'"
    poll_until(
        lambda: missing in stack.cli("logs", "boxed-broken", "--stream", "stderr").stdout,
        "the import error",
        timeout=120,
        interval=0.2,
    )
    assert stack.cli("chutes", "delete", "boxed-broken", "--yes").returncode == 0
    poll_until(lambda: not stack.containers(), "the broken chute's containers removed", timeout=120, interval=0.2)

    source = tmp_path / "boxed.py"
    source.write_text(CHUTE.format(image=registry_image))
    deployed = stack.cli("deploy", f"{source}:chute", "--timeout", "180")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert stack.call().json()["marker"] == "chutes-test-image"
    logs = stack.cli("logs", "boxed", "--stream", "stderr")
    assert logs.returncode == 0 and "chutes.runtime: listening on http://0.0.0.0:" in logs.stdout, logs.stdout
    [container] = stack.containers()
    assert stack.processes(), "the stack's parts should be running"
    stack.proc.kill()
    stack.proc.wait(10)
    poll_until(lambda: not stack.containers(), f"{container} removed", timeout=60, interval=0.2)
    poll_until(lambda: not stack.processes(), "no process of the stack left", timeout=60, interval=0.2)
