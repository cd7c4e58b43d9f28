"""Rollouts and drains through Nomad's deployments and drainer (issue 18).

A chute with two instances is replaced one instance at a time, each after it is healthy, with no failed call
through the gateway; scaling during the rollout meets Nomad's 400 and the scheduler handles it; a version that
never gets healthy fails its rollout, which ``chutes chutes events`` reports while the previous version keeps
serving. Draining the node that runs a chute's two instances moves them to another node with no failed call.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nomad.api.exceptions import BadRequestNomadException

from chutes.client import Client
from chutes.identity import chute_id
from tests.support.polling import poll_until
from tests.support.stack import Scheduler, Stack, scheduler_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

CHUTE = """\
import asyncio

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="alice",
    name="rolling",
    image="python:3.12",
    node_selector=NodeSelector(gpu_count=1, include=["a100"]),
    concurrency=4,
    max_instances=3,
    shutdown_after_seconds=600,
)

{hang}

@chute.cord(public_api_path="/version")
async def version(self, n: int = 0) -> dict:
    return {{"version": {version}, "n": n}}
"""
HANG = """
@chute.on_startup()
async def never_ready(self) -> None:
    await asyncio.sleep(3600)
"""
MOVER = CHUTE.replace('name="rolling"', 'name="mover"').replace('"/version"', '"/where"')
CID = chute_id("alice", "rolling")
JOB = f"chute-{CID}"


def _write(tmp: Path, version: int, hang: bool = False) -> str:
    path = tmp / f"rolling_v{version}.py"
    path.write_text(CHUTE.format(version=version, hang=HANG if hang else ""))
    return f"{path}:chute"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Scheduler, str, str]]:
    tmp = tmp_path_factory.mktemp("rollout")
    with scheduler_stack(tmp, nodes=("gpu-b=a100:4", "gpu-d=a100:4")) as stack:
        sched = stack.scheduler(
            "sched", CHUTES_AUTOSCALE_DOWN_DELAY="600", CHUTES_RECONCILE_INTERVAL="2", CHUTES_HEALTHY_DEADLINE="15"
        )
        sched.start()
        sched.wait_healthy()
        with Client(sched.url, stack.admin_key) as admin:
            alice = str(admin.create_user("alice")["api_key"])
            gateway_key = str(admin.create_key("gateway", role="gateway")["api_key"])
        gateway_url = stack.start_gateway(
            sched.url, gateway_key, "--domain", "chutes.test", "--hold-timeout", "90", "--wake-interval", "1",
            "--metering-interval", "0.5",
        )  # fmt: skip
        yield stack, sched, alice, gateway_url


class Caller:
    """One steady caller through the gateway, recording every status and the version that answered."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.statuses: list[int] = []
        self.versions: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        with httpx.Client(headers={"Authorization": f"Bearer {self.key}"}, timeout=60) as http:
            while not self._stop.is_set():
                n += 1
                answer = http.post(f"{self.url}/alice/rolling/version", json={"n": n})
                self.statuses.append(answer.status_code)
                if answer.status_code == 200:
                    self.versions.append(answer.json()["version"])
                time.sleep(0.05)

    def __enter__(self) -> Caller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def _passing(stack: Stack) -> int:
    return len(stack.dc.consul().health.service(JOB, passing=True)[1])


def _deployment(stack: Stack) -> dict[str, Any]:
    deployment: dict[str, Any] = stack.dc.nomad().job.get_deployment(JOB)
    return deployment


def _settled(stack: Stack, count: int) -> bool:
    deployment = _deployment(stack)
    return bool(deployment) and deployment["Status"] == "successful" and _passing(stack) == count


def test_redeploy_rolls_one_at_a_time_scaling_waits_and_a_failed_rollout_keeps_the_old_version(
    rig: tuple[Stack, Scheduler, str, str], tmp_path: Path
) -> None:
    stack, sched, alice, gateway_url = rig
    nomad = stack.dc.nomad()
    with Client(sched.url, alice) as client:
        client.deploy(_write(tmp_path, 1))
        client.scale_chute(CID, 2)  # right after the deploy: the first deployment may still be running
        poll_until(lambda: _settled(stack, 2), "two instances of v1 and a successful deployment", 120, 0.3)

        with Caller(gateway_url, alice) as caller:
            poll_until(lambda: len(caller.versions) >= 5, "calls answered", 30)
            client.deploy(_write(tmp_path, 2))
            rollout = poll_until(
                lambda: (d := _deployment(stack))["Status"] == "running" and d["JobVersion"] > 1 and d,
                "the rollout's deployment", 30, 0.1,
            )  # fmt: skip
            # Nomad refuses to scale while it runs.
            with pytest.raises(BadRequestNomadException) as err:
                nomad.job.request(JOB, "scale", json={"Count": 3, "Target": {"Group": "instance"}}, method="post")
            assert "job scaling blocked due to active deployment" in err.value.nomad_resp.text
            worst, scaled = 0, False
            while not _settled(stack, 3):
                live = [a for a in nomad.job.get_allocations(JOB) if a["DesiredStatus"] == "run"
                        and a["ClientStatus"] in ("pending", "running")]  # fmt: skip
                newest = max(a["JobVersion"] for a in live)
                fresh = [a for a in live if a["JobVersion"] == newest]
                unproven = [a for a in fresh if (a["DeploymentStatus"] or {}).get("Healthy") is not True]
                assert _passing(stack) >= 1, "an instance serves throughout"
                if not scaled:
                    worst = max(worst, len(unproven))
                    if len(fresh) > len(unproven) and _deployment(stack)["Status"] == "running":
                        # Half-way (one new instance healthy, the next one replacing): the scheduler's scale
                        # meets Nomad's 400; the reconciler applies the count once the rollout is done.
                        assert client.scale_chute(CID, 3)["desired_instances"] == 3
                        scaled = True
                time.sleep(0.2)
            assert scaled and worst == 1, "one new instance at a time, the next once it is healthy"
            poll_until(lambda: caller.versions[-5:] == [2] * 5, "calls answered by v2", 30)
            assert rollout["TaskGroups"]["instance"]["DesiredTotal"] >= 2
            failed = [s for s in caller.statuses if s != 200]
            assert not failed, (Counter(caller.statuses), sched.log(6000))
            assert set(caller.versions) == {1, 2}

            # v3 never becomes ready: its rollout fails, the v2 instances not replaced keep serving.
            client.deploy(_write(tmp_path, 3, hang=True))
            event = poll_until(
                lambda: next((e for e in client.events(CID) if e["type"] == "failed"
                              and "rollout" in e["message"]), None),
                "the failed rollout reported", 150, 0.5,
            )  # fmt: skip
            assert "Nomad: Failed due to" in event["message"], event
            assert event["data"]["serving"] >= 2, event
            calls_then = len(caller.statuses)
            poll_until(lambda: len(caller.statuses) > calls_then + 20, "more calls", 30)
        failed = [s for s in caller.statuses if s != 200]
        assert not failed, (Counter(caller.statuses), sched.log(6000))
        assert caller.versions[-10:] == [2] * 10, "the previous version keeps serving"
        assert _deployment(stack)["Status"] == "failed"
        client.delete_chute(CID)


def test_draining_the_node_moves_both_instances_with_no_failed_call(
    rig: tuple[Stack, Scheduler, str, str], tmp_path: Path
) -> None:
    stack, sched, alice, gateway_url = rig
    nomad = stack.dc.nomad()
    mover = chute_id("alice", "mover")
    path = tmp_path / "mover.py"
    path.write_text(MOVER.format(version=1, hang=""))
    with Client(sched.url, alice) as client:
        client.deploy(f"{path}:chute")
        client.scale_chute(mover, 2)
        job = f"chute-{mover}"

        def instances() -> list[dict[str, Any]]:
            return [i for i in client.instances(mover) if i["state"] == "ready"]

        poll_until(lambda: len(instances()) == 2 and len({i["node_id"] for i in instances()}) == 1,
                   "two ready instances on one node", 120, 0.3)  # fmt: skip
        [source] = {i["node_id"] for i in instances()}
        target = "gpu-d" if source == "gpu-b" else "gpu-b"
        node_id = next(x["ID"] for x in nomad.nodes.get_nodes() if x["Name"] == source)
        statuses: list[int] = []
        stop = threading.Event()

        def steady() -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {alice}"}, timeout=60) as http:
                n = 0
                while not stop.is_set():
                    n += 1
                    statuses.append(http.post(f"{gateway_url}/alice/mover/where", json={"n": n}).status_code)
                    time.sleep(0.05)

        caller = threading.Thread(target=steady, daemon=True)
        caller.start()
        try:
            poll_until(lambda: len(statuses) >= 5, "calls answered", 30)
            nomad.node.drain_node_with_spec(node_id, {"Deadline": 300 * 1_000_000_000, "IgnoreSystemJobs": False})
            poll_until(
                lambda: len(instances()) == 2 and {i["node_id"] for i in instances()} == {target}
                and nomad.node.get_node(node_id)["DrainStrategy"] is None,
                "both instances moved and the drain complete", 150, 0.5,
            )  # fmt: skip
            calls_then = len(statuses)
            poll_until(lambda: len(statuses) > calls_then + 10, "calls after the move", 30)
        finally:
            stop.set()
            caller.join(60)
        assert statuses and all(s == 200 for s in statuses), (Counter(statuses), sched.log(6000))
        assert nomad.node.get_node(node_id)["SchedulingEligibility"] == "ineligible"
        assert {a["NodeName"] for a in nomad.job.get_allocations(job) if a["DesiredTransition"]["Migrate"]} == {source}
        nomad.node.eligible_node(node_id, eligible=True)
        client.delete_chute(mover)
