"""End to end on the devcluster: placement by NodeSelector, readiness in Consul, refusal, redeploy, delete.

Nodes: gpu-a = 8× h100_sxm, gpu-b = 4× a100, gpu-c = 2× l40s, each with a simulated chutes-agent. One
scheduler process; chutes are deployed with the real client from real chute files and run the real runtime.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chutes.client import ChutesAPIError, Client
from chutes.identity import chute_id
from tests.support.polling import poll_until
from tests.support.stack import Scheduler, Stack, scheduler_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHUTE = """\
from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="alice",
    name="{name}",
    image="python:3.12",
    node_selector=NodeSelector(**{selector}),
    max_instances=2,
)


@chute.cord(public_api_path="/echo")
async def echo(self, text: str = "hi") -> dict:
    return {{"text": text, "version": {version}}}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Scheduler, str]]:
    tmp = tmp_path_factory.mktemp("sched-e2e")
    with scheduler_stack(tmp) as stack:
        sched = stack.scheduler("sched-1")
        sched.start()
        sched.wait_healthy()
        with Client(sched.url, stack.admin_key) as admin:
            key = str(admin.create_user("alice")["api_key"])
        yield stack, sched, key


def chute_file(tmp: Path, name: str, selector: dict[str, Any], version: int = 1) -> str:
    module = f"c_{name.replace('-', '_')}_v{version}"
    path = tmp / f"{module}.py"
    path.write_text(CHUTE.format(name=name, selector=json.dumps(selector), version=version))
    return f"{path}:chute"


def events_of(client: Client, ref: str) -> list[dict[str, Any]]:
    return list(client.events(ref))


def wait_event(client: Client, ref: str, kind: str, timeout: float = 90) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        events = events_of(client, ref)
        failed = [e for e in events if e["type"] == "failed"]
        assert not failed, failed
        return next((e for e in events if e["type"] == kind), None)

    result: dict[str, Any] = poll_until(found, f"event {kind!r} of {ref}", timeout, interval=0.3)
    return result


def assert_gone(stack: Stack, cid: str) -> None:
    nomad, consul = stack.dc.nomad(), stack.dc.consul()
    assert [j["ID"] for j in nomad.jobs.get_jobs(prefix=f"chute-{cid}")] == []
    allocs = nomad.allocations.get_allocations(filter_=f'JobID == "chute-{cid}"')
    assert [a["ID"] for a in allocs if a["ClientStatus"] in ("pending", "running")] == []
    assert consul.health.service(f"chute-{cid}")[1] == []
    assert consul.catalog.service(f"chute-{cid}")[1] == []


def test_two_gpus_of_a100_or_h100_land_on_gpu_b_and_become_ready(
    stack: tuple[Stack, Scheduler, str], tmp_path: Path
) -> None:
    st, sched, key = stack
    selector = {"gpu_count": 2, "include": ["a100", "h100_sxm"]}
    with Client(sched.url, key) as client:
        out = client.deploy(chute_file(tmp_path, "two-gpus", selector))
        cid = out["chute_id"]
        assert cid == chute_id("alice", "two-gpus")
        assert out["placement"]["node_id"] == "gpu-b" and out["placement"]["gpu_model"] == "a100"

        # The event stream (SSE) walks accepted → registered → placed → running → ready.
        seen: list[str] = []
        deadline = time.monotonic() + 120
        with httpx.stream(
            "GET", f"{sched.url}/v1/chutes/two-gpus/events", params={"follow": "true"},
            headers={"Authorization": f"Bearer {key}"}, timeout=httpx.Timeout(10, read=130),
        ) as resp:  # fmt: skip
            assert resp.headers["content-type"].startswith("text/event-stream")
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    seen.append(line.removeprefix("event: "))
                    assert "failed" not in seen, (seen, sched.log(6000))
                    if seen[-1] == "ready" or time.monotonic() > deadline:
                        break
        assert [k for k in seen if k in ("accepted", "registered", "placed", "running", "ready")] == [
            "accepted", "registered", "placed", "running", "ready",
        ], seen  # fmt: skip
        placed = next(e for e in events_of(client, cid) if e["type"] == "placed")
        assert "gpu-b" in placed["message"] and "2× a100" in placed["message"]

        instances = client.instances(cid)
        assert len(instances) == 1
        inst = instances[0]
        assert (inst["node_id"], inst["gpu_model"], inst["gpu_count"], inst["state"]) == ("gpu-b", "a100", 2, "ready")
        assert inst["healthy"] is True and inst["port"]
        _, entries = st.dc.consul().health.service(f"chute-{cid}", passing=True)
        assert len(entries) == 1 and inst["instance_id"] in entries[0]["Service"]["ID"]
        assert "user:alice" in entries[0]["Service"]["Tags"]
        assert client.get_chute(cid)["status"] == "ready"

        nodes = {n["node_id"]: n for n in client.nodes()}
        assert nodes["gpu-b"]["gpus_free"] == 2 and nodes["gpu-b"]["instances"] == {cid: 1}
        assert nodes["gpu-a"]["gpus_free"] == 8 and all(n["alive"] for n in nodes.values())

        # The instance's log comes through Nomad's logs API (JSON lines, one per log line).
        logs = list(client.logs(cid))
        assert all(line.instance == inst["instance_id"] for line in logs)
        got = httpx.get(f"{sched.url}/v1/chutes/{cid}/logs", params={"stream": "stderr"},
                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        lines = [json.loads(line) for line in got.text.splitlines()]
        assert lines and all(x["instance"] == inst["instance_id"] and x["stream"] == "stderr" for x in lines)

        client.delete_chute(cid)
        assert_gone(st, cid)
        with pytest.raises(ChutesAPIError) as err:
            client.get_chute(cid)
        assert err.value.status == 404


def test_second_four_gpu_chute_goes_to_gpu_a(stack: tuple[Stack, Scheduler, str], tmp_path: Path) -> None:
    st, sched, key = stack
    selector = {"gpu_count": 4, "include": ["a100", "h100_sxm"]}
    with Client(sched.url, key) as client:
        first = client.deploy(chute_file(tmp_path, "four-1", selector))
        assert first["placement"]["node_id"] == "gpu-b"
        wait_event(client, first["chute_id"], "placed")
        second = client.deploy(chute_file(tmp_path, "four-2", selector))
        assert second["placement"]["node_id"] == "gpu-a" and second["placement"]["gpu_model"] == "h100_sxm"
        placed = wait_event(client, second["chute_id"], "placed")
        assert placed["data"]["node_id"] == "gpu-a" and placed["data"]["gpu_model"] == "h100_sxm"
        # A third does not fit on gpu-b or gpu-c, but gpu-a still has 4 H100s.
        for out in (first, second):
            client.delete_chute(out["chute_id"])
            assert_gone(st, out["chute_id"])


def test_min_vram_100_is_refused_with_reasons(stack: tuple[Stack, Scheduler, str], tmp_path: Path) -> None:
    _, sched, key = stack
    with Client(sched.url, key) as client:
        with pytest.raises(ChutesAPIError) as err:
            client.deploy(chute_file(tmp_path, "too-big", {"gpu_count": 1, "min_vram_gb_per_gpu": 100}))
        assert err.value.status == 409
        assert "0 of 3 nodes: 3 wrong GPU model" in err.value.detail
        assert err.value.hint
        with pytest.raises(ChutesAPIError) as missing:
            client.get_chute("too-big")
        assert missing.value.status == 404


def test_redeploy_is_a_new_version_of_one_job(stack: tuple[Stack, Scheduler, str], tmp_path: Path) -> None:
    st, sched, key = stack
    selector = {"gpu_count": 1, "include": ["l40s"]}
    nomad = st.dc.nomad()
    with Client(sched.url, key) as client:
        v1 = client.deploy(chute_file(tmp_path, "versions", selector, version=1))
        cid = v1["chute_id"]
        assert v1["placement"]["node_id"] == "gpu-c"
        job1 = nomad.job.get_job(f"chute-{cid}")
        assert job1["Meta"]["chute_version"] == v1["version"][:12]
        v2 = client.deploy(chute_file(tmp_path, "versions", selector, version=2))
        assert v2["chute_id"] == cid and v2["version"] != v1["version"]
        job2 = nomad.job.get_job(f"chute-{cid}")
        assert job2["Meta"]["chute_version"] == v2["version"][:12] and job2["Version"] > job1["Version"]
        assert [j["ID"] for j in nomad.jobs.get_jobs(prefix=f"chute-{cid}")] == [f"chute-{cid}"]
        # Scaling beyond max_instances is refused; within it the job's count follows.
        with pytest.raises(ChutesAPIError) as err:
            client.scale_chute(cid, 3)
        assert err.value.status == 422
        assert client.scale_chute(cid, 0)["desired_instances"] == 0
        poll_until(lambda: nomad.job.get_job(f"chute-{cid}")["TaskGroups"][0]["Count"] == 0, "count 0", 20)
        # A gateway wakes a chute scaled to zero (idempotently).
        with httpx.Client(base_url=sched.url, headers={"Authorization": f"Bearer {st.admin_key}"}) as gw:
            woke = gw.post(f"/v1/internal/chutes/{cid}/wake").json()
            assert woke == {"chute_id": cid, "desired_instances": 1, "woken": True}
            assert gw.post(f"/v1/internal/chutes/{cid}/wake").json()["woken"] is False
        poll_until(lambda: nomad.job.get_job(f"chute-{cid}")["TaskGroups"][0]["Count"] == 1, "count 1", 20)
        client.delete_chute(cid)
        assert_gone(st, cid)


JOB_CHUTE = """\
from pathlib import Path

from chutes.chute import Chute, NodeSelector

chute = Chute(username="alice", name="squares", image="python:3.12", node_selector=NodeSelector(include=["l40s"]))


@chute.job(timeout=60, upload=True)
async def square(self, n: int = 2, output_dir: str = ".") -> dict:
    (Path(output_dir) / "square.txt").write_text(str(n * n))
    return {"square": n * n}
"""


def test_job_runs_are_dispatched_and_report_outputs(stack: tuple[Stack, Scheduler, str], tmp_path: Path) -> None:
    st, sched, key = stack
    path = tmp_path / "c_squares.py"
    path.write_text(JOB_CHUTE)
    nomad = st.dc.nomad()
    with Client(sched.url, key) as client:
        out = client.deploy(f"{path}:chute")
        cid = out["chute_id"]
        assert out["jobs"] == ["square"] and out["desired_instances"] == 0
        assert nomad.job.get_job(f"chute-{cid}-job-square")["ParameterizedJob"]["Payload"] == "required"
        run = client.run_job(cid, "square", {"n": 7})
        again = client.get_job(run["run_id"])
        assert again["job_name"] == "square" and again["nomad_job_id"].startswith(f"chute-{cid}-job-square/")
        done = poll_until(
            lambda: (r := client.get_job(run["run_id"]))["status"] in ("succeeded", "failed") and r, "the run", 90, 0.3
        )
        assert done["status"] == "succeeded", (done, sched.log(6000))
        assert done["result"] == {"square": 49}
        names = {o["name"] for o in done["outputs"]}
        assert {"square.txt", "status.json"} <= names
        got = httpx.get(f"{sched.url}/v1/jobs/{run['run_id']}/outputs/square.txt",
                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert got.status_code == 200 and got.text == "49"
        with pytest.raises(ChutesAPIError) as err:
            client.run_job(cid, "cube", {"n": 1})
        assert err.value.status == 404
        client.delete_chute(cid)
        assert nomad.jobs.get_jobs(prefix=f"chute-{cid}") == []


def test_reconciler_recreates_missing_jobs_and_purges_orphans(
    stack: tuple[Stack, Scheduler, str], tmp_path: Path
) -> None:
    st, sched, key = stack
    nomad = st.dc.nomad()
    with Client(sched.url, key) as client:
        out = client.deploy(chute_file(tmp_path, "drifty", {"gpu_count": 1, "include": ["a100"]}))
        cid = out["chute_id"]
        jid = f"chute-{cid}"
        # Someone purges the job behind the scheduler's back: the reconciler registers it again.
        nomad.job.deregister_job(jid, purge=True)
        poll_until(lambda: nomad.jobs.get_jobs(prefix=jid), "the job registered again", 30, 0.2)
        assert any(e["type"] == "registered" and "reconciler" in e["message"] for e in client.events(cid))
        # ... or changes its count (once its deployment is done: Nomad refuses to scale during one): scaled back.
        poll_until(lambda: (nomad.job.get_deployment(jid) or {}).get("Status") not in ("running", "paused"),
                   "the job's deployment done", 60, 0.2)  # fmt: skip
        nomad.job.request(jid, "scale", json={"Count": 2, "Target": {"Group": "instance"}}, method="post")
        poll_until(lambda: nomad.job.get_job(jid)["TaskGroups"][0]["Count"] == 1, "the count back at 1", 30, 0.2)
        # A job with chutes' meta whose chute the store does not know is an orphan: purged.
        orphan = dict(nomad.job.get_job(jid))
        ghost = "00000000-0000-5000-8000-000000000000"
        orphan.update(ID=f"chute-{ghost}", Name=f"chute-{ghost}", Meta={**orphan["Meta"], "chute_id": ghost})
        for key_name in ("Status", "StatusDescription", "Version", "SubmitTime", "CreateIndex", "ModifyIndex",
                         "JobModifyIndex", "Stable"):  # fmt: skip
            orphan.pop(key_name, None)
        orphan["TaskGroups"][0]["Count"] = 0
        nomad.jobs.register_job({"Job": orphan})
        assert nomad.jobs.get_jobs(prefix=f"chute-{ghost}")
        poll_until(lambda: not nomad.jobs.get_jobs(prefix=f"chute-{ghost}"), "the orphan purged", 30, 0.2)
        client.delete_chute(cid)
        assert_gone(st, cid)


def test_a_chute_woken_while_every_gpu_is_busy_waits_for_capacity_then_runs(
    stack: tuple[Stack, Scheduler, str], tmp_path: Path
) -> None:
    """Nomad blocks the evaluation that cannot place; the deploy says it waits; a freed GPU places it."""
    st, sched, key = stack
    nomad = st.dc.nomad()
    with Client(sched.url, key) as client:
        sleeper = client.deploy(chute_file(tmp_path, "sleeper", {"gpu_count": 1, "include": ["l40s"]}))
        cid = sleeper["chute_id"]
        wait_event(client, cid, "placed")
        client.scale_chute(cid, 0)
        poll_until(lambda: _l40s_free(client) == 2, "both L40S free", 30, 0.2)
        hog = client.deploy(chute_file(tmp_path, "hog", {"gpu_count": 2, "include": ["l40s"]}))
        assert hog["placement"]["node_id"] == "gpu-c"
        wait_event(client, hog["chute_id"], "placed")
        # A call for the sleeper wakes it (the gateway's path): Nomad cannot place it now.
        with httpx.Client(base_url=sched.url, headers={"Authorization": f"Bearer {st.admin_key}"}) as gw:
            assert gw.post(f"/v1/internal/chutes/{cid}/wake").json()["woken"] is True
        waiting = wait_event(client, cid, "waiting", timeout=30)
        assert "waiting for capacity" in waiting["message"] and "0 of 1" in waiting["message"]
        assert "exhausted" in waiting["data"]["nomad"], waiting
        blocked = nomad.evaluation.get_evaluation(waiting["data"]["blocked_evaluation"])
        assert blocked["Status"] == "blocked" and blocked["TriggeredBy"] == "queued-allocs"
        # The hog goes away: the blocked evaluation places the sleeper at once, and it becomes ready.
        started = time.monotonic()
        client.delete_chute(hog["chute_id"])
        placed = poll_until(
            lambda: [e for e in events_of(client, cid) if e["type"] == "placed" and e["id"] > waiting["id"]],
            "the sleeper placed", 30, 0.1,
        )  # fmt: skip
        print(f"placed {time.monotonic() - started:.2f}s after the delete")
        assert placed[0]["data"]["node_id"] == "gpu-c"
        assert nomad.evaluation.get_evaluation(blocked["ID"])["Status"] == "complete"
        wait_event(client, cid, "ready", timeout=90)
        client.delete_chute(cid)
        assert_gone(st, cid)


def _l40s_free(client: Client) -> int:
    return int(next(n for n in client.nodes() if n["node_id"] == "gpu-c")["gpus_free"])
