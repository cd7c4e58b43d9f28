"""Reads never write: a chute's status and instances answer from the store and the cluster view, and the status
shown follows the instance's Consul health, while only the recorder writes what it observed.

A real scheduler app (uvicorn, SQLite, no leader loops) on a devcluster; the chute's Nomad job runs a tiny HTTP
server whose ``/_ready`` answers 200 once a flag file exists, so its Consul check turns passing on cue.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from chutes.chute.node_selector import NodeSelector
from chutes.identity import chute_id
from chutes.manifest import CordSpec, ImageSpec, Manifest
from chutes.scheduler import recorder, secret_sync
from chutes.scheduler.render import ChuteRelease, RenderSettings, render_chute_job
from chutes.scheduler.store import instances as instances_repo
from chutes.scheduler.store.models import Chute, User
from tests.scheduler.server import RunningScheduler, make_config, serve
from tests.support.devcluster import DevclusterHandle, devcluster

pytestmark = pytest.mark.timeout(120)

SERVER = """
import http.server, os, sys
flag = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if os.path.exists(flag) else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["NOMAD_PORT_http"])), H).serve_forever()
"""


@pytest.fixture
def dc() -> Iterator[DevclusterHandle]:
    with devcluster(nodes=["gpu-b=a100:4"], local_node=False) as handle:
        yield handle


def manifest() -> Manifest:
    return Manifest(
        chute_id=chute_id("alice", "reads"), username="alice", name="reads", image=ImageSpec(ref="python:3.12"),
        node_selector=NodeSelector(gpu_count=1, include=["a100"]),
        cords=[CordSpec(name="f", path="/f", public_api_path="/f")], sdk_version="0.1.0",
    )  # fmt: skip


class WriteCounter:
    """Counts the INSERT, UPDATE and DELETE statements the scheduler's engine sends."""

    def __init__(self, sched: RunningScheduler) -> None:
        self.writes: list[str] = []
        self.engine = sched.services.store.engine.sync_engine
        event.listen(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
            self.writes.append(statement)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


async def test_status_and_instances_reads_follow_consul_health_and_never_write(
    dc: DevclusterHandle, tmp_path: Path
) -> None:
    flag = tmp_path / "ready"
    script = tmp_path / "ready_server.py"
    script.write_text(SERVER)
    m = manifest()
    config = make_config(tmp_path, nomad_addr=dc.nomad_addr, consul_addr=dc.consul_addr, view_wait_s=2)
    async with serve(config) as sched:
        key = await sched.new_user("alice")
        async with sched.services.store.session() as s:
            owner = await s.get(User, (await _user_id(sched, key)))
            assert owner is not None
            s.add(Chute(id=m.chute_id, owner_id=owner.id, username="alice", name="reads", slug="reads",
                        manifest=m.model_dump(mode="json"), version="a" * 64, invoke_secret="s",
                        desired_instances=1, status="registered"))  # fmt: skip
        settings = RenderSettings(
            scheduler_url=sched.url, runtime_command=(sys.executable, str(script), str(flag)),
            cpu_mhz_per_gpu=100, memory_mb_per_gpu=64, check_interval_s=1, check_timeout_s=1,
        )  # fmt: skip
        async with sched.services.store.session() as s:
            stored = await s.get(Chute, m.chute_id)
        assert stored is not None
        await secret_sync.write_variables(sched.services, stored, m)  # the task's template waits for it
        job = render_chute_job(m, ChuteRelease("a" * 64, count=1), settings)
        job["Constraints"] = []  # the GPU model constraint reads node meta that only an agent sets
        await sched.services.nomad.register_job(job)

        counter = WriteCounter(sched)
        try:
            async with sched.client(key) as http:

                async def read() -> tuple[dict[str, Any], list[dict[str, Any]]]:
                    chute = await http.get(f"/v1/chutes/{m.chute_id}")
                    instances = await http.get(f"/v1/chutes/{m.chute_id}/instances")
                    assert chute.status_code == 200 and instances.status_code == 200, (chute.text, instances.text)
                    return chute.json(), instances.json()

                async def lists_show(chute: dict[str, Any]) -> None:
                    """The lists (the API's and the dashboard's) show the status the chute's own GET shows."""
                    listed = await http.get("/v1/chutes")
                    board = await http.get("/ui/api/chutes")
                    assert listed.status_code == 200 and board.status_code == 200, (listed.text, board.text)
                    for rows in (listed.json(), board.json()):
                        shown = [(c["status"], c["status_detail"]) for c in rows if c["chute_id"] == m.chute_id]
                        assert shown == [(chute["status"], chute["status_detail"])]

                async def until(status: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
                    deadline = time.monotonic() + 60
                    while True:
                        chute, instances = await read()
                        if chute["status"] == status:
                            return chute, instances
                        assert time.monotonic() < deadline, (chute, instances)
                        await asyncio.sleep(0.2)

                # Running, not passing /_ready yet: the status says so, and the instance is not healthy.
                chute, instances = await until("running")
                assert chute["status_detail"] == "starting: waiting for /_ready"
                await lists_show(chute)
                assert [(i["state"], i["healthy"], i["node_id"], i["gpu_model"]) for i in instances] == [
                    ("running", False, "gpu-b", "a100")
                ]
                # Its check passes: the very next reads show it ready, with no recorder at work.
                flag.touch()
                chute, instances = await until("ready")
                assert chute["status_detail"] == "1 of 1 instances ready"
                assert [(i["state"], i["healthy"]) for i in instances] == [("ready", True)]
                await lists_show(chute)
                # ... and again, from the view, without asking Consul or Nomad.
                rebuilds = sched.services.view.rebuilds
                for _ in range(5):
                    chute, instances = await read()
                    assert chute["status"] == "ready" and instances[0]["healthy"] is True
                assert sched.services.view.rebuilds == rebuilds
            assert counter.writes == [], counter.writes
        finally:
            counter.close()

        # Nothing was recorded by those reads: the recorder (leader loops, deploy watch) is the writer.
        async with sched.services.store.session() as s:
            assert await instances_repo.list_for(s, m.chute_id) == []
            row = await s.get(Chute, m.chute_id)
            assert row is not None and row.status == "registered"
            chute_row = row
        views = await recorder.record_chute(sched.services, chute_row, await sched.services.view.current())
        assert [v.state for v in views] == ["ready"]
        async with sched.services.store.session() as s:
            recorded = await instances_repo.list_for(s, m.chute_id)
            row = await s.get(Chute, m.chute_id)
        assert [(r.state, r.node_id, r.gpu_model, r.gpu_count) for r in recorded] == [("ready", "gpu-b", "a100", 1)]
        assert row is not None and (row.status, row.status_detail) == ("ready", "1 of 1 instances ready")
        await sched.services.nomad.deregister_job(job["ID"], purge=True)


async def _user_id(sched: RunningScheduler, key: str) -> str:
    async with sched.client(key) as http:
        resp = await http.get("/v1/me")
        assert resp.status_code == 200, resp.text
        return str(resp.json()["user_id"])
