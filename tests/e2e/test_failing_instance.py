"""An instance that cannot start (its startup hook raises, so the runtime exits and Nomad restarts it) is
reported ``failing`` with the reason from Nomad's task events, not as starting; and it is never billed."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from chutes.client import Client
from tests.support.polling import poll_until
from tests.support.stack import Scheduler, Stack, scheduler_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BROKEN = """\
from chutes.chute import Chute, NodeSelector

chute = Chute(username="alice", name="broken", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.on_startup()
async def load(self) -> None:
    raise RuntimeError("the model weights are missing")


@chute.cord(public_api_path="/ping")
async def ping(self) -> dict:
    return {}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Scheduler, str]]:
    tmp = tmp_path_factory.mktemp("failing")
    with scheduler_stack(tmp, nodes=("gpu-a=l4:1",)) as stack:
        sched = stack.scheduler("sched", CHUTES_METERING_INTERVAL="1")
        sched.start()
        sched.wait_healthy()
        with Client(sched.url, stack.admin_key) as admin:
            key = str(admin.create_user("alice")["api_key"])
        yield stack, sched, key


def test_a_crash_looping_instance_is_failing_with_its_reason_and_not_billed(
    stack: tuple[Stack, Scheduler, str], tmp_path: Path
) -> None:
    _, sched, key = stack
    path = tmp_path / "broken_chute.py"
    path.write_text(BROKEN)
    with Client(sched.url, key, timeout=60) as client:
        client.deploy(f"{path}:chute")
        chute = poll_until(
            lambda: (c := client.get_chute("broken"))["status"] == "failing" and c, "the chute failing", 90, 0.3
        )
        assert "exited with code 1" in chute["status_detail"], chute
        (instance,) = [i for i in client.instances("broken") if i["state"] == "failing"]
        assert "exited with code 1" in instance["message"]

        # GETs show the instances as the cluster view sees them now; the event is written by the recorder (the
        # leader's reconciler or the deploy watch) on its next pass, so it may arrive a moment later.
        def failing_events() -> list[dict[str, str]] | None:
            events = list(client.events("broken"))
            return [e for e in events if e["type"] == "failed" and "is failing" in e["message"]] and events

        events = poll_until(failing_events, "the recorded 'is failing' event", 30, 0.3)
        assert not any(e["type"] == "ready" for e in events)
        usage = client.usage(chute="broken")
        assert Decimal(usage["total"]["gpu_seconds"]) == 0 and usage["total"]["running_instances"] == 0
