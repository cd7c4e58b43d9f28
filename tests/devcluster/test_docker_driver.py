"""The devcluster's ``docker`` driver (podman) through python-nomad and py-consul, with a real image and registry.

The image is this checkout's runtime on ``localhost/chutes-base:bookworm`` (tests/support/containers.py: built
once per code version), pushed to a docker-registry on a free loopback port, so the first task pulls it.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nomad.api.exceptions
import pytest

from chutes.dev.containers import remove_leftovers
from chutes.devcluster.nomad.container_spec import LABEL_ALLOC
from chutes.scheduler.secret_env import template_block, variable_items, variable_path
from tests.support.containers import (
    MARKER,
    containers_labelled,
    local_registry,
    private_storage,
    require_containers,
    runtime_image,
)
from tests.support.devcluster import DevclusterHandle, devcluster
from tests.support.polling import poll_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.containers, pytest.mark.slow]

S = 1_000_000_000
NODES = ("gpu-a=h100_sxm:4",)
# What the devcluster runs with besides the usual: the platform's credentials, a setting of the host's and
# proxy variables with a password (podman passes these into containers unless told not to). None of it may
# reach a container: as in Nomad's docker driver, a container gets its task's environment only.
HOST_ENV = {
    "CHUTES_ADMIN_KEY": "cnk_admin-secret", "NOMAD_TOKEN": "nomad-secret", "CONSUL_HTTP_TOKEN": "consul-secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret", "HOST_ONLY_SETTING": "host-only",
    "http_proxy": "http://proxy-user:proxy-secret@127.0.0.1:9", "HTTPS_PROXY": "http://proxy-user:proxy-secret@127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost",
}  # fmt: skip

# The task: an HTTP server on NOMAD_PORT_http that describes the container it runs in, prints its start, and
# on SIGTERM says so and exits 0 (or ignores SIGTERM when IGNORE_TERM is set).
APP = f"""
import http.server, json, os, signal, socket, sys, urllib.request
def term(*_):
    print("got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE_TERM") else term)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        out = {{"hostname": socket.gethostname(), "env": dict(os.environ), "uid": os.getuid(),
               "marker": open("{MARKER}").read().strip() if os.path.exists("{MARKER}") else None,
               "pid1": open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode(),
               "task_dir": sorted(os.listdir(os.environ["NOMAD_TASK_DIR"]))}}
        if self.path == "/host":
            out["host"] = urllib.request.urlopen(os.environ["TARGET"], timeout=5).read().decode()
        body = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("serving on", os.environ["NOMAD_PORT_http"], flush=True)
print("to stderr", file=sys.stderr, flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["NOMAD_PORT_http"])), Handler).serve_forever()
"""


def docker_job(job_id: str, image: str, *, env: dict[str, str] | None = None, **task: Any) -> dict[str, Any]:
    return {
        "ID": job_id,
        "Type": "service",
        "TaskGroups": [
            {
                "Name": "web",
                "Count": 1,
                "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http"}]}],
                "RestartPolicy": {"Attempts": 2, "Interval": 300 * S, "Delay": 2 * S, "Mode": "fail"},
                "Services": [
                    {
                        "Name": job_id,
                        "PortLabel": "http",
                        "Provider": "consul",
                        "Checks": [{"Name": "up", "Type": "http", "Path": "/", "Interval": S // 2, "Timeout": S}],
                    }
                ],
                "Tasks": [
                    {
                        "Name": "main",
                        "Driver": "docker",
                        "Config": {
                            "image": image,
                            "command": "python3",
                            "args": ["-c", APP],
                            "ports": ["http"],
                            "init": True,
                            "pids_limit": 256,
                        },
                        "Env": {"CHUTES_SECRET": "s3cret", **(env or {})},
                        "KillSignal": "SIGTERM",
                        "KillTimeout": 5 * S,
                        "Resources": {
                            "CPU": 750,
                            "MemoryMB": 256,
                            "Devices": [{"Name": "nvidia/gpu", "Count": 2}],
                        },
                        **task,
                    }
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_containers()
    with local_registry(tmp_path_factory.mktemp("registry")) as registry:
        yield runtime_image(registry)


@pytest.fixture(scope="module")
def storage(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's podman storage of its own: the image is not pulled yet when the first task starts."""
    with private_storage(tmp_path_factory.mktemp("storage")) as conf:
        yield conf


@pytest.fixture(scope="module")
def ddc(storage: Path) -> Iterator[DevclusterHandle]:
    with devcluster(NODES, local_node=False, extra_args=["--docker-driver", "on"], env=HOST_ENV) as handle:
        yield handle


@pytest.fixture
def host_server() -> Iterator[str]:
    """A server on the host's loopback only, which a container must still reach (as it reaches the scheduler)."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from the host"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://host.containers.internal:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _alloc(n: Any, job_id: str) -> dict[str, Any]:
    [stub] = poll_until(lambda: n.job.get_allocations(job_id), "an allocation")
    result: dict[str, Any] = n.allocation.get_allocation(stub["ID"])
    return result


def _port(alloc: dict[str, Any]) -> int:
    return int(next(p["Value"] for p in alloc["AllocatedResources"]["Shared"]["Ports"] if p["Label"] == "http"))


def _passing(c: Any, name: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = c.health.service(name, passing=True)[1]
    return result


def _events(n: Any, alloc_id: str) -> list[str]:
    events = n.allocation.get_allocation(alloc_id)["TaskStates"]["main"]["Events"]
    return [f"{e['Type']}: {e['DisplayMessage']}" for e in events]


def _inspect(name: str) -> dict[str, Any]:
    out = subprocess.run(["podman", "inspect", name], capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out)[0]
    return result


def _gone(n: Any, alloc_id: str) -> bool:
    return n.allocation.get_allocation(alloc_id)["ClientStatus"] in ("complete", "failed")


def test_task_runs_in_its_image_pulled_by_digest_with_ports_env_limits_gpus_logs(
    ddc: DevclusterHandle, image: str, host_server: str
) -> None:
    n, c = ddc.nomad(), ddc.consul()
    n.jobs.register_job({"Job": docker_job("box", image, env={"TARGET": host_server})})
    alloc = _alloc(n, "box")
    poll_until(lambda: _passing(c, "box"), f"a passing check; events {_events(n, alloc['ID'])}", timeout=180)
    events = _events(n, alloc["ID"])
    assert "Driver: Downloading image" in events, events  # not in local storage under the registry's name
    port = _port(alloc)
    inside = httpx.get(f"http://127.0.0.1:{port}/host", timeout=10).json()

    # It is the image's file system, its own hostname, catatonit as PID 1 (init), and it reaches the host's
    # loopback through host.containers.internal.
    assert inside["marker"] == "chutes-test-image"
    assert inside["hostname"] != socket.gethostname()
    assert inside["pid1"] == "/run/podman-init"  # catatonit, mounted there by podman
    assert inside["host"] == "hello from the host"
    env = inside["env"]
    assert env["NOMAD_PORT_http"] == str(port)  # listens on the mapped port; the host port maps to it
    assert (env["NOMAD_TASK_DIR"], env["NOMAD_ALLOC_DIR"], env["NOMAD_SECRETS_DIR"]) == ("/local", "/alloc", "/secrets")
    assert env["NOMAD_ALLOC_ID"] == alloc["ID"] and env["CHUTES_SECRET"] == "s3cret"
    [device] = alloc["AllocatedResources"]["Tasks"]["main"]["Devices"]
    assert env["NVIDIA_VISIBLE_DEVICES"] == ",".join(device["DeviceIDs"])  # simulated GPUs: the variable only
    assert "CUDA_VISIBLE_DEVICES" not in env
    # Nothing of the devcluster's environment: no platform credential, no host setting, no proxy.
    leaked = {k for k, v in env.items() if v in HOST_ENV.values() or "-secret" in v or k.lower().endswith("_proxy")}
    assert not leaked and "HOST_ONLY_SETTING" not in env, sorted(leaked)

    # Limits and labels, as podman applied them; the env file with the secret was removed once read.
    [name] = containers_labelled(LABEL_ALLOC, alloc["ID"])
    assert name == f"main-{alloc['ID']}"
    host_config = _inspect(name)["HostConfig"]
    assert host_config["Memory"] == 256 * 1024 * 1024 and host_config["PidsLimit"] == 256
    assert host_config["CpuShares"] == 750 and not host_config["Privileged"]
    assert not (ddc.data_dir / "allocs" / alloc["ID"] / "main" / "container.env").exists()
    assert "s3cret" not in json.dumps(host_config)

    # Logs through the same API as raw_exec.
    stdout = poll_until(lambda: n.client.stream_logs.stream(alloc["ID"], "main", "stdout", plain=True), "stdout")
    assert f"serving on {port}" in stdout
    assert "to stderr" in n.client.stream_logs.stream(alloc["ID"], "main", "stderr", plain=True)

    # Stop: the kill signal reaches the process (it says so and exits 0), the container is gone.
    n.job.deregister_job("box", purge=True)
    poll_until(lambda: _gone(n, alloc["ID"]), "the allocation stopped", timeout=30)
    assert "got SIGTERM" in n.client.stream_logs.stream(alloc["ID"], "main", "stdout", plain=True)
    assert containers_labelled(LABEL_ALLOC, alloc["ID"]) == []
    assert _passing(c, "box") == []


def test_a_chutes_template_env_reaches_the_container_and_a_change_restarts_it(
    ddc: DevclusterHandle, image: str
) -> None:
    """What the scheduler renders for a chute in its image: the template of secret_env.py reads the job's
    Variable, and its secrets, instance token and invoke secret are in the container's environment."""
    n, c = ddc.nomad(), ddc.consul()
    sha = "ab" * 32
    pem = '-----BEGIN KEY-----\nAAAA "q" \\x\n-----END KEY-----'  # spans lines: not in an env file
    # Named like a credential and spanning lines: podman's scrubbed environment must still carry it to the env file.
    ssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----"
    secrets = {"HF_TOKEN": "hf_s3cret v1", "PEM": pem, "DEPLOY_TOKEN": ssh}
    items = variable_items("inv-s3cret", {sha: "cit_tok3n"}, secrets)
    n.variable.create_variable(variable_path("boxsecret"), {"Items": items})
    job = docker_job("boxsecret", image, Templates=[template_block("boxsecret", sha, sorted(secrets))])
    n.jobs.register_job({"Job": job})
    alloc = _alloc(n, "boxsecret")
    poll_until(lambda: _passing(c, "boxsecret"), f"a passing check; {_events(n, alloc['ID'])}", timeout=180)

    def inside() -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"http://127.0.0.1:{_port(alloc)}/", timeout=10).json()
        return result

    first = inside()
    env = first["env"]
    assert env["HF_TOKEN"] == "hf_s3cret v1" and env["PEM"] == pem and env["DEPLOY_TOKEN"] == ssh
    assert env["CHUTES_INSTANCE_TOKEN"] == "cit_tok3n" and env["CHUTES_INVOKE_SECRET"] == "inv-s3cret"
    assert env["CHUTES_SECRET"] == "s3cret"  # the task's own Env stays
    registered = json.dumps(n.job.get_job("boxsecret"))
    assert "hf_s3cret" not in registered and "cit_tok3n" not in registered and "inv-s3cret" not in registered
    name = f"main-{alloc['ID']}"
    assert "hf_s3cret" not in json.dumps(_inspect(name)["HostConfig"])
    assert not (ddc.data_dir / "allocs" / alloc["ID"] / "main" / "container.env").exists()

    # A new value: the container restarts in place (change_mode restart) and has it.
    items["HF_TOKEN"] = "hf_s3cret v2"
    n.variable.create_variable(variable_path("boxsecret"), {"Items": items})

    def rotated() -> bool:
        try:
            return bool(inside()["env"]["HF_TOKEN"] == "hf_s3cret v2")
        except (httpx.HTTPError, ValueError):
            return False

    poll_until(rotated, f"the restarted container with the new value; {_events(n, alloc['ID'])}", timeout=90)
    assert "Restart Signaled: Template with change_mode restart re-rendered" in _events(n, alloc["ID"])
    assert n.allocation.get_allocation(alloc["ID"])["TaskStates"]["main"]["Restarts"] == 1
    assert inside()["env"]["PEM"] == pem
    n.job.deregister_job("boxsecret", purge=True)
    poll_until(lambda: _gone(n, alloc["ID"]), "the allocation stopped", timeout=30)
    assert containers_labelled(LABEL_ALLOC, alloc["ID"]) == []


def test_job_run_output_json_of_a_docker_job_runs(ddc: DevclusterHandle, image: str) -> None:
    """What ``nomad job run -output`` prints for a current docker job registers and runs (the image swapped for
    the local test image; the nomad-provider service is accepted and not registered in Consul)."""
    body = json.loads((Path(__file__).parent / "data" / "job_run_output_docker.json").read_text())
    [task] = body["Job"]["TaskGroups"][0]["Tasks"]
    task["Config"]["image"] = image
    n, c = ddc.nomad(), ddc.consul()
    n.jobs.register_job(body)
    poll_until(lambda: len(_passing(c, "web-output")) == 2, "two passing instances", timeout=180)
    assert c.catalog.service("web-output-nomad")[1] == []
    allocs = [a for a in n.job.get_allocations("web-output") if a["ClientStatus"] == "running"]
    assert len(allocs) == 2 and all(a["DeploymentStatus"]["Healthy"] is not False for a in allocs)
    answer = httpx.get(f"http://127.0.0.1:{_port(n.allocation.get_allocation(allocs[0]['ID']))}/", timeout=10)
    assert answer.status_code == 200  # python -m http.server inside, on the mapped port 8080
    n.job.deregister_job("web-output", purge=True)
    for alloc in allocs:
        poll_until(lambda a=alloc: _gone(n, a["ID"]), "the allocation stopped", timeout=30)


def test_kill_timeout_then_sigkill_and_nothing_left(ddc: DevclusterHandle, image: str) -> None:
    n = ddc.nomad()
    n.jobs.register_job({"Job": docker_job("stubborn", image, env={"IGNORE_TERM": "1"}, KillTimeout=1 * S)})
    alloc = _alloc(n, "stubborn")
    poll_until(lambda: _passing(ddc.consul(), "stubborn"), "a passing check", timeout=120)
    started = time.monotonic()
    n.job.deregister_job("stubborn")
    poll_until(lambda: _gone(n, alloc["ID"]), "the allocation stopped", timeout=30)
    assert time.monotonic() - started < 15
    events = _events(n, alloc["ID"])
    assert "Killing: Sent interrupt. Waiting 1s before force killing" in events
    assert "Terminated: Exit Code: 137" in events  # SIGKILL after KillTimeout
    assert containers_labelled(LABEL_ALLOC, alloc["ID"]) == []
    n.job.deregister_job("stubborn", purge=True)


def test_container_killed_from_outside_goes_critical_then_restarts(ddc: DevclusterHandle, image: str) -> None:
    n, c = ddc.nomad(), ddc.consul()
    n.jobs.register_job({"Job": docker_job("victim", image)})
    alloc = _alloc(n, "victim")
    poll_until(lambda: _passing(c, "victim"), "a passing check", timeout=120)
    name = f"main-{alloc['ID']}"
    first = _inspect(name)["Id"]
    subprocess.run(["podman", "kill", name], check=True, capture_output=True)

    def critical() -> bool:
        checks = c.health.checks("victim")[1]
        return bool(checks) and all(ch["Status"] == "critical" for ch in checks)

    poll_until(critical, "Consul marking the instance critical", timeout=10, interval=0.05)
    poll_until(lambda: _passing(c, "victim"), "the restarted task passing again", timeout=60)
    after = n.allocation.get_allocation(alloc["ID"])
    state = after["TaskStates"]["main"]
    assert after["ClientStatus"] == "running" and state["Restarts"] == 1
    assert any(e.startswith("Terminated: Exit Code: 137") for e in _events(n, alloc["ID"]))
    assert any(e.startswith("Restarting:") for e in _events(n, alloc["ID"]))
    assert _inspect(name)["Id"] != first  # a new container for the same allocation
    n.job.deregister_job("victim", purge=True)
    poll_until(lambda: _gone(n, alloc["ID"]), "the allocation stopped", timeout=30)
    assert containers_labelled(LABEL_ALLOC, alloc["ID"]) == []


def test_a_pull_failure_is_a_driver_failure_and_fails_the_allocation(ddc: DevclusterHandle, image: str) -> None:
    n = ddc.nomad()
    missing = image.split("/", 1)[0] + "/test/does-not-exist:v1"
    job = docker_job("nopull", missing)
    job["TaskGroups"][0]["RestartPolicy"] = {"Attempts": 0, "Interval": 60 * S, "Delay": S, "Mode": "fail"}
    job["TaskGroups"][0]["ReschedulePolicy"] = {"Attempts": 0, "Unlimited": False}
    n.jobs.register_job({"Job": job})
    alloc = _alloc(n, "nopull")
    poll_until(lambda: _gone(n, alloc["ID"]), "the allocation failed", timeout=60)
    failures = [e for e in _events(n, alloc["ID"]) if e.startswith("Driver Failure")]
    assert failures and "failed to pull" in failures[0] and "does-not-exist" in failures[0], failures
    assert n.allocation.get_allocation(alloc["ID"])["ClientStatus"] == "failed"
    n.job.deregister_job("nopull", purge=True)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"privileged": True}, "privileged mode is disabled"),
        ({"volumes": ["/:/host"]}, "host mounts"),
        ({"network_mode": "host"}, "network_mode"),
    ],
)
def test_configs_that_would_escape_are_refused_at_register(
    ddc: DevclusterHandle, image: str, config: dict[str, Any], needle: str
) -> None:
    job = docker_job("escape", image)
    job["TaskGroups"][0]["Tasks"][0]["Config"].update(config)
    with pytest.raises(nomad.api.exceptions.BaseNomadException) as info:
        ddc.nomad().jobs.register_job({"Job": job})
    assert needle in info.value.nomad_resp.text


def test_nodes_fingerprint_the_docker_driver(ddc: DevclusterHandle) -> None:
    node = ddc.nomad().node.get_node(ddc.nomad().nodes.get_nodes()[0]["ID"])
    assert node["Drivers"]["docker"]["Healthy"] and node["Attributes"]["driver.docker"] == "1"
    assert node["Attributes"]["driver.docker.privileged.enabled"] == "false"


def test_a_devcluster_killed_hard_leaves_containers_the_next_start_removes(
    image: str, storage: Path, tmp_path: Path
) -> None:
    with devcluster(NODES, local_node=False, data_dir=tmp_path / "data", extra_args=["--docker-driver", "on"]) as dc:
        n = dc.nomad()
        n.jobs.register_job({"Job": docker_job("crashy", image)})
        alloc = _alloc(n, "crashy")
        poll_until(lambda: _passing(dc.consul(), "crashy"), "a passing check", timeout=120)
        name = f"main-{alloc['ID']}"
        before = _inspect(name)["Id"]
        dc.kill()  # SIGKILL: no task is stopped; the container keeps running
        assert containers_labelled(LABEL_ALLOC, alloc["ID"]) == [name]
        dc.start()
        # The leftover is removed at start-up and the allocation's task started again in a new container.
        poll_until(lambda: _passing(dc.consul(), "crashy"), "the task running again", timeout=60)
        assert _inspect(name)["Id"] != before
        assert "removed 1 container(s) left behind" in dc.log()
        n = dc.nomad()
        n.job.deregister_job("crashy", purge=True)
        poll_until(lambda: _gone(n, alloc["ID"]), "the allocation stopped", timeout=30)
    assert containers_labelled(LABEL_ALLOC, alloc["ID"]) == []


def test_chutes_devs_clean_up_removes_what_a_killed_devcluster_left_and_nothing_else(
    ddc: DevclusterHandle, image: str, storage: Path, tmp_path: Path
) -> None:
    """``chutes dev`` stops its devcluster last; one that had to be killed could not stop its containers, so the
    stack removes them (``remove_leftovers``), and only them: another devcluster's container keeps running."""
    n = ddc.nomad()
    n.jobs.register_job({"Job": docker_job("bystander", image)})
    other = _alloc(n, "bystander")
    poll_until(lambda: _passing(ddc.consul(), "bystander"), "the other devcluster's task", timeout=120)
    data = tmp_path / "devcluster"
    with devcluster(NODES, local_node=False, data_dir=data, extra_args=["--docker-driver", "on"]) as dc:
        dc.nomad().jobs.register_job({"Job": docker_job("orphan", image)})
        alloc = _alloc(dc.nomad(), "orphan")
        poll_until(lambda: _passing(dc.consul(), "orphan"), "a passing check", timeout=120)
        dc.kill()  # as `chutes dev` does to a devcluster that does not stop in time
        assert containers_labelled(LABEL_ALLOC, alloc["ID"]) == [f"main-{alloc['ID']}"]
        assert remove_leftovers(data) == 1
        assert containers_labelled(LABEL_ALLOC, alloc["ID"]) == []
        assert remove_leftovers(data) == 0
    assert containers_labelled(LABEL_ALLOC, other["ID"]) == [f"main-{other['ID']}"]
    assert httpx.get(f"http://127.0.0.1:{_port(other)}/", timeout=10).status_code == 200
    n.job.deregister_job("bystander", purge=True)
    poll_until(lambda: _gone(n, other["ID"]), "the allocation stopped", timeout=30)
    assert containers_labelled(LABEL_ALLOC, other["ID"]) == []
