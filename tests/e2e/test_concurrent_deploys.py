"""Placement under concurrency: twelve deploys at once for two free GPUs, through two schedulers sharing one
store. Exactly two are accepted (202 with a planned placement), ten are refused with 409 and the reasons,
and nothing is stored for the ten (no chute, no events); the two land on the two GPUs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chutes.client import ChutesAPIError, Client
from chutes.identity import chute_id
from tests.support.polling import poll_until
from tests.support.stack import Scheduler, Stack, scheduler_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHUTE = """\
from chutes.chute import Chute, NodeSelector

chute = Chute(username="alice", name="{name}", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.cord(public_api_path="/ping")
async def ping(self) -> dict:
    return {{"name": "{name}"}}
"""


@pytest.fixture(scope="module")
def two_schedulers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, list[Scheduler], str]]:
    tmp = tmp_path_factory.mktemp("concurrent")
    with scheduler_stack(tmp, nodes=("gpu-a=l4:2",)) as stack:
        scheds = [stack.scheduler(f"sched-{n}", CHUTES_DEPLOY_WATCH="0") for n in (1, 2)]
        for sched in scheds:
            sched.start()
        for sched in scheds:
            sched.wait_healthy()
        with Client(scheds[0].url, stack.admin_key) as admin:
            key = str(admin.create_user("alice")["api_key"])
        yield stack, scheds, key


def test_twelve_concurrent_deploys_for_two_free_gpus(
    two_schedulers: tuple[Stack, list[Scheduler], str], tmp_path: Path
) -> None:
    stack, scheds, key = two_schedulers
    names = [f"race-{n:02d}" for n in range(12)]
    files = []
    for name in names:
        path = tmp_path / f"{name.replace('-', '_')}.py"
        path.write_text(CHUTE.format(name=name))
        files.append(f"{path}:chute")
    # Bundles built up front, so that the twelve requests leave together.
    clients = [Client(scheds[n % 2].url, key, timeout=60) for n in range(12)]
    start = threading.Barrier(12)
    outcomes: dict[str, Any] = {}

    def deploy(n: int) -> None:
        start.wait()
        try:
            outcomes[names[n]] = clients[n].deploy(files[n])
        except ChutesAPIError as exc:
            outcomes[names[n]] = exc

    threads = [threading.Thread(target=deploy, args=(n,)) for n in range(12)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        for client in clients:
            client.close()

    accepted = sorted(name for name, out in outcomes.items() if isinstance(out, dict))
    refused = {name: out for name, out in outcomes.items() if isinstance(out, ChutesAPIError)}
    assert len(outcomes) == 12
    assert len(accepted) == 2, {n: str(o) for n, o in outcomes.items()}
    assert len(refused) == 10
    for name, exc in refused.items():
        assert exc.status == 409, (name, str(exc))
        assert "no node can run" in exc.detail and "0 of 1 nodes" in exc.detail, exc.detail

    with Client(scheds[1].url, key) as client:
        assert sorted(c["name"] for c in client.list_chutes()) == accepted  # nothing stored for the ten
        for name in refused:
            with pytest.raises(ChutesAPIError) as info:
                list(client.events(chute_id("alice", name)))
            assert info.value.status == 404

    # The two winners really run, one GPU each: Nomad was never asked for more than the node has.
    nomad = stack.dc.nomad()

    def both_running() -> bool:
        running = 0
        for name in accepted:
            allocs = nomad.allocations.get_allocations(filter_=f'JobID == "chute-{chute_id("alice", name)}"')
            running += sum(1 for a in allocs if a["ClientStatus"] == "running")
        return running == 2

    poll_until(both_running, "both accepted chutes running", 90, 0.3)
    with Client(scheds[0].url, key) as client:
        (node,) = [n for n in client.nodes() if n["node_id"] == "gpu-a"]
    assert node["gpus_free"] == 0
