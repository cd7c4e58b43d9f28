"""Secrets reach Nomad even when it was down: the API stores the change and says so (503 with a hint), the
leader's ``secrets`` loop writes it once Nomad answers; variables of chutes that no longer exist are deleted, and
deleting a chute deletes its variable and its secrets. Against a real devcluster (stopped and started again)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chutes.identity import chute_id
from chutes.scheduler import secret_sync
from chutes.scheduler.secret_box import generate_key
from chutes.scheduler.store import chute_secrets as secrets_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute
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
