"""Chaos on the whole platform under a steady load: instances killed, an agent crashed, the devcluster crashed.

One stack for the module (devcluster with two simulated nodes, their agents with a 3 s TTL, a scheduler with
its loops, a gateway), alice's chute ``steady`` with two instances on gpu-a (2 of its 4 L40S), and a load of
a few callers through the gateway that runs while each test breaks something. The tests run in file order;
each leaves the stack healthy for the next.

What other suites already prove is not repeated here (docs/reliability.md): a scheduler killed in the middle
of a deploy (tests/e2e/test_scheduler_crash.py), a leader killed (tests/e2e/test_scheduler_leader.py), one
instance killed once (tests/gateway/test_proxy.py, tests/e2e/test_gateway_e2e.py), a Consul outage seen by a
gateway alone (tests/gateway/test_consul_outage.py), an agent's TTL going critical (tests/agent/).
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from chutes.client import ChutesAPIError
from tests.resilience.stack import FullStack, SteadyLoad, full_stack
from tests.support.polling import poll_until

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(180)]

AGENT_TTL = 3.0
STEADY = """\
import asyncio
import os

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="alice", name="steady", image="python:3.12", concurrency=8, max_instances=2,
    node_selector=NodeSelector(gpu_count=1, include=["l40s"]),
)


@chute.cord(public_api_path="/work")
async def work(self, n: int = 0, seconds: float = 0.02) -> dict:
    await asyncio.sleep(seconds)
    return {"n": n, "pid": os.getpid()}
"""
PROBE = STEADY.replace('name="steady"', 'name="probe"').replace("max_instances=2", "max_instances=1")


@dataclass
class World:
    fs: FullStack
    alice: str
    cid: str

    @property
    def url(self) -> str:
        return self.fs.chute_url("alice", "steady", "/work")

    def load(self, workers: int = 3) -> SteadyLoad:
        return SteadyLoad(self.url, self.alice, workers=workers)

    def node(self, node_id: str) -> dict[str, object]:
        with self.fs.client(self.alice) as client:
            return client.node(node_id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("chaos")
    env = {"CHUTES_RECONCILE_INTERVAL": "1", "CHUTES_WATCH_INTERVAL": "0.3", "CHUTES_LEADER_TTL": "3",
           "CHUTES_LEADER_LOCK_DELAY": "0", "CHUTES_AUTOSCALE_DOWN_DELAY": "600"}  # fmt: skip
    with full_stack(tmp, ("gpu-a=l40s:4", "gpu-b=a100:1"), agent_ttl=AGENT_TTL, scheduler_env=env) as fs:
        alice = fs.new_user("alice")
        cid = fs.deploy(alice, STEADY, "steady_chute")
        with fs.client(alice) as client:
            client.scale_chute("steady", 2)
        fs.wait_passing(cid, 2, 120)
        w = World(fs, alice, cid)
        poll_until(lambda: len(_serving_pids(w)) == 2, "the gateway routing to both instances", 30, 0.2)
        yield w


_probe_ids = itertools.count(10**9)  # distinct bodies: identical calls within a second would sign alike


def _serving_pids(world: World, calls: int = 12) -> set[int]:
    """The instances (pids) that answer ``calls`` calls through the gateway; every call must succeed."""
    pids = set()
    with httpx.Client(headers={"Authorization": f"Bearer {world.alice}"}, timeout=30) as http:
        for _ in range(calls):
            resp = http.post(world.url, json={"n": next(_probe_ids), "seconds": 0})
            assert resp.status_code == 200, resp.text
            pids.add(resp.json()["pid"])
    return pids


def _instance_pgids(world: World) -> list[int]:
    groups = world.fs.task_groups(world.cid)
    assert len(groups) == 2, groups
    return sorted(groups)


def test_instances_killed_one_at_a_time_under_load_fail_no_call(world: World) -> None:
    """Two rounds: SIGKILL one instance, the other carries the load alone until Nomad restarts the dead one
    (its restart policy waits 15 s) and the gateway routes to it again; then the other one is killed."""
    with world.load() as load:
        time.sleep(1.0)
        for _ in range(2):
            victim_pgid = _instance_pgids(world)[0]
            survivors = set(_instance_pgids(world)) - {victim_pgid}
            before = _serving_pids(world)
            os.killpg(victim_pgid, signal.SIGKILL)  # calls in flight on it lose their connection
            killed_at = time.monotonic()
            poll_until(lambda: len(world.fs.passing(world.cid)) == 1, "Consul seeing the dead instance", 30, 0.2)
            poll_until(lambda: len(world.fs.passing(world.cid)) == 2, "the instance restarted and passing", 90, 0.3)
            # The gateway's table follows Consul: the restarted instance (a new process) gets calls again.
            restarted = poll_until(lambda b=before: _serving_pids(world) - b, "calls reaching the new one", 15, 0.3)
            assert survivors <= set(_instance_pgids(world)), "the surviving instance was replaced"
            assert load.count(killed_at) > 20, "the load stopped after the kill"
            assert restarted <= load.pids(killed_at) | _serving_pids(world)
    failed = load.failures()
    assert not failed, failed[:5]
    assert len(load.results) > 100


def test_a_crashed_agent_leaves_placement_within_its_ttl_and_instances_keep_serving(world: World) -> None:
    fs = world.fs
    agent = fs.agents["gpu-a"]
    assert world.node("gpu-a")["alive"] is True
    pids = _serving_pids(world)
    groups = world.fs.task_groups(world.cid)
    with world.load() as load:
        time.sleep(0.5)
        agent.kill()  # SIGKILL: no deregistration, its TTL check must expire
        killed_at = time.monotonic()
        poll_until(lambda: world.node("gpu-a")["alive"] is False, "gpu-a not alive", AGENT_TTL + 10, 0.1)
        gone_after = time.monotonic() - killed_at
        # Placement skips it: an L40S chute (2 of gpu-a's 4 are free) is refused, naming the reason.
        with pytest.raises(ChutesAPIError) as refused, fs.client(world.alice) as client:
            client.deploy(_write(fs, PROBE, "probe_chute"))
        assert refused.value.status == 409, refused.value
        assert "agent not alive" in refused.value.detail, refused.value.detail
        time.sleep(2.0)  # the reconciler ticks every second: it must leave the running instances alone
        assert world.fs.task_groups(world.cid) == groups, "an instance on the node was stopped or replaced"
        poll_until(lambda: _serving_pids(world) == pids, "both instances still serving", 10, 0.2)
    assert not load.failures(), load.failures()[:5]
    assert gone_after <= AGENT_TTL + 4.0, f"gpu-a left placement {gone_after:.1f} s after its agent died"
    # The agent comes back: the node is alive again.
    agent.start()
    poll_until(lambda: world.node("gpu-a")["alive"] is True, "gpu-a alive again", 30, 0.2)


def _write(fs: FullStack, source: str, module: str) -> str:
    path = fs.stack.workdir / f"{module}.py"
    path.write_text(source)
    return f"{path}:chute"


def test_the_gateway_keeps_routing_through_a_devcluster_crash_and_recovers_after(world: World) -> None:
    """Nomad and Consul (the devcluster) die hard: the instances keep running (as tasks outlive a Nomad
    server outage), the gateway keeps routing on its last table and the scheduler and agents keep trying.
    When it comes back it reaps and restarts the tasks; everything converges again."""
    fs = world.fs
    pids = _serving_pids(world)
    with world.load() as load:
        time.sleep(0.5)
        fs.dc.kill()
        down_at = time.monotonic()
        time.sleep(5.0)
        outage_end = time.monotonic()
        served = load.pids(down_at)
        fs.dc.start()
        up_at = time.monotonic()
        poll_until(lambda: len(fs.passing(world.cid)) == 2, "instances passing after the restart", 90, 0.3)
        poll_until(lambda: _serving_pids(world) - pids, "calls reaching the restarted instances", 30, 0.3)
        recovered_at = time.monotonic()
        time.sleep(1.0)
    during = load.failures(down_at, outage_end)
    assert not during, during[:5]
    assert served == pids and load.count(down_at) - load.count(outage_end) > 20  # served on the last table
    assert not load.failures(recovered_at), load.failures(recovered_at)[:5]
    assert fs.sched.alive() and fs.gateway.alive() and all(a.alive() for a in fs.agents.values())
    poll_until(lambda: all(world.node(n)["alive"] for n in fs.agents), "agents registered again", 30, 0.3)
    # It stepped down when Consul vanished (its session could not be renewed) and campaigns again with backoff.
    poll_until(lambda: httpx.get(f"{fs.sched.url}/healthz").json()["leader"], "the scheduler leading again", 45, 0.3)
    print(f"devcluster restart: recovered in {recovered_at - up_at:.1f} s, {len(load.failures(up_at))} failed calls")
