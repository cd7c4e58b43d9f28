"""Secrets reach Nomad even when it was down: the API stores the change and says so (503 with a hint), the
leader's ``secrets`` loop writes it once Nomad answers; variables of chutes that no longer exist are deleted, and
deleting a chute deletes its variable and its secrets. Against a real devcluster (stopped and started again)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chutes.identity import chute_id
from chutes.scheduler import runs, secret_sync
from chutes.scheduler.secret_box import generate_key
from chutes.scheduler.store import chute_secrets as secrets_repo
from chutes.scheduler.store import jobs as jobs_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute
from chutes.scheduler.store.secrets import run_token, token_secret
from tests.scheduler.helpers import manifest
from tests.scheduler.server import make_config, serve
from tests.support.devcluster import DevclusterHandle, devcluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def dc(tmp_path: Path) -> Iterator[DevclusterHandle]:
    with devcluster(("gpu-a=l4:1",), local_node=False, data_dir=tmp_path / "dc") as handle:
        yield handle


async def test_a_change_made_while_nomad_is_down_is_applied_later(dc: DevclusterHandle, tmp_path: Path) -> None:
    config = make_config(tmp_path, nomad_addr=dc.nomad_addr, consul_addr=dc.consul_addr, secrets_key=generate_key())
    async with serve(config) as api:
        alice = await api.new_user("alice")
        cid = chute_id("alice", "svc")
        async with api.services.store.session() as s:
            user = await users_repo.get_user_by_name(s, "alice")
            assert user is not None
            s.add(Chute(id=cid, owner_id=user.id, username="alice", name="svc", slug="svc",
                        manifest=manifest("alice", "svc"), version="0" * 64, invoke_secret="inv-" + "0" * 28,
                        desired_instances=0, status="ready"))  # fmt: skip
        path = f"nomad/jobs/chute-{cid}"

        dc.stop()
        async with api.client(alice) as http:
            down = await http.post("/v1/secrets", json={"chute": "svc", "name": "HF_TOKEN", "value": 'a "quoted" one'})
            assert down.status_code == 503 and "once Nomad answers" in down.json()["hint"]
            assert "quoted" not in down.text
            assert [x["name"] for x in (await http.get("/v1/secrets")).json()] == ["HF_TOKEN"]  # stored
        async with api.services.store.session() as s:
            assert await secrets_repo.pending(s) == [cid]

        dc.start()
        orphan = f"nomad/jobs/chute-{uuid.uuid4()}"
        dc.nomad().variable.create_variable(orphan, {"Items": {"X": "left behind"}})
        await secret_sync.sync_once(api.services)
        items = dc.nomad().variable.get_variable(path)["Items"]
        assert items["HF_TOKEN"] == 'a \\"quoted\\" one'  # escaped for the env file the template renders
        assert items["CHUTES_INVOKE_SECRET"] == "inv-" + "0" * 28
        assert items["CHUTES_INSTANCE_TOKEN_" + "0" * 12].startswith("cit_")
        async with api.services.store.session() as s:
            assert await secrets_repo.pending(s) == []
        listed = {v["Path"] for v in dc.nomad().variables.get_variables(prefix="nomad/jobs/chute-")}
        assert listed == {path}, "the orphan went, the chute's variable stayed"

        async with api.client(alice) as http:
            assert (await http.delete(f"/v1/chutes/{cid}")).status_code == 204
        assert dc.nomad().variables.get_variables(prefix="nomad/jobs/chute-") == []
        async with api.services.store.session() as s:
            assert await secrets_repo.for_chute(s, cid) == []


async def test_run_tokens_enter_the_jobs_variable_before_dispatch_and_leave_when_runs_finish(
    dc: DevclusterHandle, tmp_path: Path
) -> None:
    """Each unfinished run of a job has its token in the job's variable, runs created and written concurrently
    included; a finished run's token leaves it, the others stay."""
    config = make_config(tmp_path, nomad_addr=dc.nomad_addr, consul_addr=dc.consul_addr, secrets_key=generate_key())
    async with serve(config) as api:
        await api.new_user("alice")
        cid = chute_id("alice", "trainer")
        jobs = [{"name": "train", "timeout": 60}]
        async with api.services.store.session() as s:
            user = await users_repo.get_user_by_name(s, "alice")
            assert user is not None
            chute = Chute(id=cid, owner_id=user.id, username="alice", name="trainer", slug="trainer",
                          manifest=manifest("alice", "trainer", cords=[], jobs=jobs), version="0" * 64,
                          invoke_secret="inv-" + "0" * 28, desired_instances=0, status="ready")  # fmt: skip
            s.add(chute)

        async def new_run_then_write() -> str:
            async with api.services.store.session() as s:
                run = await jobs_repo.create_run(s, chute_id=cid, job_name="train", user_id=chute.owner_id,
                                                 version="0" * 64, input={})  # fmt: skip
                run_id = run.id
            await secret_sync.write_variables(api.services, chute, only_job="train")
            return run_id

        run_ids = await asyncio.gather(*(new_run_then_write() for _ in range(6)))
        path = f"nomad/jobs/chute-{cid}-job-train"
        async with api.services.store.session() as s:
            store_secret = await token_secret(s)
        items = dc.nomad().variable.get_variable(path)["Items"]
        assert {k: v for k, v in items.items() if k.startswith("CHUTES_RUN_TOKEN_")} == {
            f"CHUTES_RUN_TOKEN_{r}": run_token(store_secret, r) for r in run_ids
        }
        assert items["CHUTES_INVOKE_SECRET"] == "inv-" + "0" * 28  # the job's own items stay alongside

        finished = run_ids[:2]
        for run_id in finished:
            async with api.services.store.session() as s:
                row = await jobs_repo.get_run(s, run_id)
                assert row is not None
                jobs_repo.set_status(row, "succeeded")
            await runs.forget_token(api.services, row)
        left = dc.nomad().variable.get_variable(path)["Items"]
        assert {k.removeprefix("CHUTES_RUN_TOKEN_") for k in left if k.startswith("CHUTES_RUN_TOKEN_")} == set(
            run_ids[2:]
        )
