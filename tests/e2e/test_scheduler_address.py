"""A scheduler that comes back at another address: the jobs its instances were started from name an address
that no longer answers, so a restarted instance could never fetch its bundle. The reconciler registers them
again with the new address; the chute is served by an instance started from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chutes.client import Client
from chutes.identity import chute_id
from tests.support.polling import poll_until
from tests.support.stack import Stack, scheduler_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHUTE = """\
from chutes.chute import Chute, NodeSelector

chute = Chute(username="alice", name="moving", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.cord(public_api_path="/ping")
async def ping(self) -> dict:
    return {"pong": True}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with scheduler_stack(tmp_path_factory.mktemp("address"), nodes=("gpu-a=l4:2",)) as stack:
        yield stack


def test_jobs_follow_a_scheduler_that_moved(stack: Stack, tmp_path: Path) -> None:
    first = stack.scheduler("first")
    first.start()
    first.wait_healthy()
    with Client(first.url, stack.admin_key) as admin:
        key = str(admin.create_user("alice")["api_key"])
    path = tmp_path / "moving_chute.py"
    path.write_text(CHUTE)
    cid = chute_id("alice", "moving")
    nomad, consul = stack.dc.nomad(), stack.dc.consul()
    with Client(first.url, key, timeout=60) as client:
        client.deploy(f"{path}:chute")
        poll_until(lambda: client.get_chute("moving")["status"] == "ready", "ready", 90, 0.3)
    job = nomad.job.get_job(f"chute-{cid}")
    assert job["Meta"]["chutes_scheduler_url"] == first.url
    old_allocs = {a["ID"] for a in nomad.job.get_allocations(f"chute-{cid}")}
    first.stop()

    second = stack.scheduler("second")  # the same store, another port
    second.start()
    second.wait_healthy()
    assert second.url != first.url
    poll_until(
        lambda: nomad.job.get_job(f"chute-{cid}")["Meta"].get("chutes_scheduler_url") == second.url,
        "the job registered again with the new address", 60, 0.3,
    )  # fmt: skip
    env = nomad.job.get_job(f"chute-{cid}")["TaskGroups"][0]["Tasks"][0]["Env"]
    assert env["CHUTES_SCHEDULER_URL"] == second.url

    def served_by_a_new_instance() -> bool:
        _, passing = consul.health.service(f"chute-{cid}", passing=True)
        return any(e["Service"]["ID"][len("_nomad-task-") :][:36] not in old_allocs for e in passing)

    poll_until(served_by_a_new_instance, "an instance started from the new job passing", 90, 0.3)
    with Client(second.url, key) as client:
        events = list(client.events("moving"))
    assert any("rendered differently now" in e["message"] for e in events if e["type"] == "registered")
