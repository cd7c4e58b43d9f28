"""Tenant isolation under ``chutes dev``, probed the way an attacker on the machine would probe it.

One ``chutes dev --domain dev.test`` for the module; each test is one promise of issue 16:

- the wildcard hijack: ``acme`` deploying ``research-chat`` while ``acme-research`` has ``chat`` (both read
  ``acme-research-chat``) is refused at deploy, and the victim's host address keeps reaching the victim;
- the cluster's APIs refuse calls without a token (and tokens are written where the user can use them);
- a chute's process finds no admin key, gateway key, user key or cluster token in any environment it can
  read in ``/proc`` (including the scheduler's, the gateway's, the agents' and the devcluster's);
- a ``chute-<id>`` service registered by hand in Consul (even naming a real allocation) gets no traffic;
- a finished job run's outputs cannot be changed, with its own token or any other.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import consul
import httpx
import nomad
import pytest

from chutes.client import ChutesAPIError, Client
from chutes.identity import chute_id
from tests.e2e.test_cli_dev import alive
from tests.support.polling import poll_until
from tests.support.processes import descendants, wait_written

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
CHUTES = str(Path(sys.executable).parent / "chutes")
DOMAIN = "dev.test"

VICTIM = """
from chutes.chute import Chute, NodeSelector

chute = Chute(username="acme-research", name="chat", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.cord(public_api_path="/who")
async def who(self) -> dict:
    return {"served_by": "acme-research/chat"}
"""

INTRUDER = VICTIM.replace('username="acme-research", name="chat"', 'username="acme", name="research-chat"').replace(
    "acme-research/chat", "acme/research-chat"
)

# Scans every environment this process can read for anything shaped like a platform secret (API keys, UUID
# tokens, instance/run tokens) and answers their sha256: the test compares hashes, so no secret is sent.
PROBE = r"""
import hashlib
import os
import re

from chutes.chute import Chute, NodeSelector

chute = Chute(username="demo", name="probe", image="python:3.12", node_selector=NodeSelector(gpu_count=1))
SHAPES = re.compile(
    rb"cnk_[A-Za-z0-9_-]{43}|c[ij]t_[A-Za-z0-9_-]{20,}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


@chute.cord(public_api_path="/scan")
async def scan(self) -> dict:
    read = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        read[entry] = sorted({hashlib.sha256(m).hexdigest() for m in SHAPES.findall(data)})
    return {"pid": os.getpid(), "environs": read}


@chute.cord(public_api_path="/ping")
async def ping(self) -> dict:
    return {"instance": os.environ.get("NOMAD_ALLOC_ID")}
"""

TRAINER = """
from chutes.chute import Chute, NodeSelector

chute = Chute(username="demo", name="trainer", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.job(timeout=60)
async def train(self, steps: int = 1) -> dict:
    import os

    # A chute that keeps its run token (here: shows it) to try it again once the run has finished.
    return {"steps": steps, "kept_token": os.environ.get("CHUTES_RUN_TOKEN", "")}
"""


@dataclass
class Dev:
    info: dict[str, Any]
    secrets: dict[str, str]
    data_dir: Path
    files: Path

    @property
    def gateway(self) -> str:
        return str(self.info["gateway_url"])

    @property
    def api(self) -> str:
        return str(self.info["api_url"])

    def client(self, key: str | None = None) -> Client:
        return Client(self.api, key or self.info["api_key"], gateway_url=self.gateway)

    def nomad(self, token: str | None = None) -> Any:
        port = int(self.info["nomad_addr"].rsplit(":", 1)[1])
        return nomad.Nomad(host="127.0.0.1", port=port, token=token, timeout=10)

    def consul(self, token: str | None = None) -> Any:
        port = int(self.info["consul_addr"].rsplit(":", 1)[1])
        c = consul.Consul(host="127.0.0.1", port=port, token=token)
        c.token = token  # py-consul lets CONSUL_HTTP_TOKEN override an explicit token
        return c

    def new_user(self, name: str) -> str:
        with Client(self.api, self.secrets["admin_key"]) as admin:
            return str(admin.create_user(name)["api_key"])

    def write(self, name: str, source: str) -> str:
        path = self.files / f"{name}.py"
        path.write_text(source)
        return f"{path}:chute"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("isolation")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_", "CONSUL_"))}
    env["CHUTES_CONFIG"] = str(tmp / "config.ini")
    ready, data = tmp / "ready.json", tmp / "data"
    argv = [CHUTES, "dev", "--simulate", "--data-dir", str(data), "--ready-file", str(ready), "--domain", DOMAIN,
            "--no-write-config"]  # fmt: skip
    log = (tmp / "dev.log").open("wb")
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_written(ready, proc, "chutes dev up", 150, tmp / "dev.log")
        info = json.loads(ready.read_text())
        secrets = json.loads((data / "secrets.json").read_text())
        files = tmp / "chutes"
        files.mkdir()
        yield Dev(info, secrets, data, files)
    finally:
        below = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        for pid in below:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()


def _call(dev: Dev, key: str, path: str, host: str | None = None, timeout: float = 150) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if host:
        headers["Host"] = host
    return httpx.post(f"{dev.gateway}{path}", headers=headers, content=b"{}", timeout=timeout)


def test_the_wildcard_hijack_is_refused_at_deploy_and_the_victims_address_keeps_working(dev: Dev) -> None:
    victim_key, intruder_key = dev.new_user("acme-research"), dev.new_user("acme")
    with dev.client(victim_key) as victim:
        assert victim.deploy(dev.write("victim", VICTIM))["host_label"] == "acme-research-chat"
    with dev.client(intruder_key) as intruder, pytest.raises(ChutesAPIError) as refused:
        intruder.deploy(dev.write("intruder", INTRUDER))
    assert refused.value.status == 409
    assert "acme-research-chat" in str(refused.value) and "another chute" in str(refused.value)
    with dev.client(intruder_key) as intruder, pytest.raises(ChutesAPIError):
        intruder.get_chute("research-chat")  # nothing of the refused deploy was stored
    host = f"acme-research-chat.{DOMAIN}"
    answer = _call(dev, victim_key, "/who", host=host)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"served_by": "acme-research/chat"}
    # The intruder reaches nothing there: not the victim's chute (not shared), and no chute of its own.
    assert _call(dev, intruder_key, "/who", host=host).status_code == 404


def test_nomad_and_consul_refuse_calls_without_a_token(dev: Dev) -> None:
    info = dev.info
    assert (dev.data_dir / "nomad_token").read_text().strip() == info["nomad_token"]
    assert (dev.data_dir / "consul_token").read_text().strip() == info["consul_token"]
    for path in ("nomad_token", "consul_token", "secrets.json"):
        assert (dev.data_dir / path).stat().st_mode & 0o077 == 0, path
    with pytest.raises(nomad.api.exceptions.URLNotAuthorizedNomadException):
        dev.nomad().jobs.get_jobs()  # every job's invoke secret and instance token would be in there
    with pytest.raises(nomad.api.exceptions.URLNotAuthorizedNomadException):
        dev.nomad(token="00000000-0000-0000-0000-00000000dead").jobs.get_jobs()
    raw = httpx.get(f"{info['nomad_addr']}/v1/allocations")
    assert raw.status_code == 403 and raw.json()["detail"] == "Permission denied"
    with pytest.raises(consul.ACLPermissionDenied):
        dev.consul().kv.get("chutes/nodes/gpu-a")
    with pytest.raises(consul.ACLPermissionDenied):
        dev.consul().agent.service.register("chute-x", service_id="rogue", address="127.0.0.1", port=9)
    assert dev.consul().catalog.services()[1] == {}  # lists leave out what the token may not see
    # The management tokens the ready file and the data dir hold work, as with a real cluster's.
    assert isinstance(dev.nomad(token=info["nomad_token"]).jobs.get_jobs(), list)
    assert "consul" in dev.consul(token=info["consul_token"]).catalog.services()[1]
    # Each part's token does only its part's job: the gateway's reads chute services, never writes KV.
    gateway = dev.consul(token=dev.secrets["gateway_consul_token"])
    with pytest.raises(consul.ACLPermissionDenied):
        gateway.kv.put("chutes/nodes/gpu-a", "{}")
    # ... and follows the scheduler's access-change notices with blocking queries: that one key, read only.
    index, _ = gateway.kv.get("chutes/gateway/invalidations")
    assert gateway.kv.get("chutes/gateway/invalidations", index=index, wait="50ms")[0] is not None
    with pytest.raises(consul.ACLPermissionDenied):
        gateway.kv.put("chutes/gateway/invalidations", "{}")
    with pytest.raises(consul.ACLPermissionDenied):
        gateway.kv.get("chutes/nodes/gpu-a")
    with pytest.raises(nomad.api.exceptions.URLNotAuthorizedNomadException):
        dev.nomad(token=dev.secrets["gateway_nomad_token"]).jobs.register_job({"Job": {"ID": "x"}})


@pytest.fixture(scope="module")
def probe(dev: Dev) -> str:
    """The probe chute deployed and answering; its id."""
    with dev.client() as owner:
        deployed = owner.deploy(dev.write("probe", PROBE))
    answer = _call(dev, dev.info["api_key"], "/demo/probe/ping")
    assert answer.status_code == 200, answer.text
    return str(deployed["chute_id"])


def _platform_secrets(dev: Dev) -> dict[str, str]:
    names = [k for k in dev.secrets if k.endswith(("_key", "_token"))]
    return {name: hashlib.sha256(dev.secrets[name].encode()).hexdigest() for name in names}


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_chute_finds_no_platform_secret_in_any_environment_it_can_read(dev: Dev, probe: str) -> None:
    secrets = _platform_secrets(dev)
    assert {"admin_key", "gateway_key", "user_key", "secrets_key", "nomad_token", "consul_token",
            "scheduler_nomad_token", "scheduler_consul_token", "gateway_consul_token",
            "agent_consul_token"} <= set(secrets)  # fmt: skip
    answer = _call(dev, dev.info["api_key"], "/demo/probe/scan")
    assert answer.status_code == 200, answer.text
    scan = answer.json()
    environs: dict[str, list[str]] = scan["environs"]
    # The scan did read the platform's processes (raw_exec runs as the same user): the check has teeth.
    parts = {pid: _cmdline(pid) for pid in environs}
    for daemon in ("chutes-scheduler", "chutes-gateway", "chutes-devcluster", "chutes-agent"):
        assert any(daemon in cmd for cmd in parts.values()), f"the chute could not read the {daemon}'s environment"
    found = {
        (name, pid, parts[pid][:80])
        for pid, hashes in environs.items()
        for name, digest in secrets.items()
        if digest in hashes
    }
    assert not found, f"platform secrets readable by a chute: {sorted(found)}"


class _Rogue(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        _Rogue.hits.append(self.path)
        body = b'{"served_by": "rogue"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_hand_registered_chute_service_gets_no_traffic(dev: Dev, probe: str) -> None:
    service = f"chute-{probe}"
    [alloc] = [a["ID"] for a in dev.nomad(token=dev.info["nomad_token"]).job.get_allocations(service)
               if a["ClientStatus"] == "running"]  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Rogue)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    admin = dev.consul(token=dev.info["consul_token"])  # the worst case: someone who may write to Consul
    # One plain registration, one in Nomad's id format naming the real (running) allocation.
    rogues = ("rogue-instance", f"_nomad-task-{alloc}-runtime-{service}-rogue")
    try:
        check = consul.Check.http(f"http://127.0.0.1:{port}/_ready", interval="1s", timeout="1s")
        for sid in rogues:
            assert admin.agent.service.register(service, service_id=sid, address="127.0.0.1", port=port, check=check)
        poll_until(
            lambda: len(admin.health.service(service, passing=True)[1]) >= 3, "the rogue registrations passing", 20, 0.2
        )
        served = set()
        for _ in range(30):  # random two-choice balancing: unverified, ~2 in 3 calls would go to the rogue
            answer = _call(dev, dev.info["api_key"], "/demo/probe/ping", timeout=30)
            assert answer.status_code == 200, answer.text
            served.add(answer.json().get("instance"))
        assert served == {alloc}
        assert all(path == "/_ready" for path in _Rogue.hits), sorted(set(_Rogue.hits))  # Consul checks only
    finally:
        for sid in rogues:
            admin.agent.service.deregister(sid)
        server.shutdown()


def test_a_finished_runs_outputs_cannot_be_changed(dev: Dev) -> None:
    with dev.client() as owner:
        owner.deploy(dev.write("trainer", TRAINER))
        run_id = owner.run_job("trainer", "train", {"steps": 3})["run_id"]
        run = poll_until(
            lambda: (r := owner.get_job(run_id))["status"] in ("succeeded", "failed") and r,
            "the run finished",
            120,
            0.5,
        )
        assert run["status"] == "succeeded", run
        before = owner.job_output(run_id, "status.json")
    kept = run["result"]["kept_token"]
    assert kept.startswith("cjt_"), run["result"]  # the run had its token, from its template
    n = dev.nomad(token=dev.info["nomad_token"])
    cid = chute_id("demo", "trainer")
    [child] = [j for j in n.jobs.get_jobs(prefix=f"chute-{cid}-job-train/") if j.get("ParentID")]
    dispatched = n.job.get_job(child["ID"])
    # No credential in the job Nomad holds: the dispatch's meta names the run, its token was in the variable.
    assert dispatched["Meta"]["run_id"] == run_id and kept not in json.dumps(dispatched)
    assert kept not in json.dumps(n.job.get_job(f"chute-{cid}-job-train"))
    variable = f"nomad/jobs/chute-{cid}-job-train"
    poll_until(
        lambda: f"CHUTES_RUN_TOKEN_{run_id}" not in n.variable.get_variable(variable)["Items"],
        "the finished run's token gone from its job's variable",
        30,
        0.2,
    )
    forged = {"job": "train", "run_id": run_id, "status": "failed", "error": "rewritten", "result": {"steps": 0}}
    files = {"files": ("status.json", json.dumps(forged).encode(), "application/json")}
    url = f"{dev.api}/v1/instances/jobs/{run_id}/outputs"
    attempts = [(kept, 403), (dev.info["api_key"], 401), (dev.secrets["admin_key"], 401)]
    # The chute version's instance token (an item of the same variable) is no run token.
    items = n.variable.get_variable(variable)["Items"]
    instance_tokens = [v for k, v in items.items() if k.startswith("CHUTES_INSTANCE_TOKEN_")]
    assert instance_tokens, sorted(items)
    attempts += [(token, 401) for token in instance_tokens]
    for token, status in attempts:
        refused = httpx.post(url, files=files, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert refused.status_code == status, refused.text
    with dev.client() as owner:
        assert owner.get_job(run_id)["status"] == "succeeded"
        assert owner.job_output(run_id, "status.json") == before
