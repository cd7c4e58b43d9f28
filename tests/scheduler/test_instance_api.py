"""Instance endpoints: job output uploads (names checked, status.json sets the outcome), scoped to the token."""

from __future__ import annotations

import json

import pytest

from chutes.identity import chute_id
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import jobs as jobs_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute
from chutes.scheduler.store.secrets import instance_token, token_secret
from tests.scheduler.helpers import manifest
from tests.scheduler.server import RunningScheduler

pytestmark = pytest.mark.timeout(60)


async def _job_chute(api: RunningScheduler, name: str) -> tuple[str, str, str]:
    """(chute id, instance token, run id) of a chute with a pending run."""
    man = manifest("alice", name, cords=[], jobs=[{"name": "train"}])
    cid = chute_id("alice", name)
    async with api.services.store.session() as s:
        user = await users_repo.get_user_by_name(s, "alice")
        assert user is not None
        s.add(Chute(id=cid, owner_id=user.id, username="alice", name=name, slug=name, manifest=man,
                    version="1" * 64, invoke_secret="x", desired_instances=0))  # fmt: skip
        await s.flush()
        token = instance_token(await token_secret(s), cid, "1" * 64)
        await chutes_repo.put_version(s, cid, "1" * 64, b"b", man, token)
        run = await jobs_repo.create_run(s, chute_id=cid, job_name="train", user_id=user.id, version="1" * 64, input={})
    return cid, token, run.id


async def test_outputs_upload_and_outcome(api: RunningScheduler) -> None:
    key = await api.new_user("alice")
    _, token, run_id = await _job_chute(api, "trainer")
    _, other_token, _ = await _job_chute(api, "other")
    status = {"job": "train", "run_id": run_id, "status": "succeeded", "error": None, "result": {"loss": 0.1}}
    files = [
        ("files", ("status.json", json.dumps(status).encode(), "application/json")),
        ("files", ("plots/loss.csv", b"1,0.5\n2,0.1\n", "text/csv")),
    ]
    async with api.client(other_token) as http:
        # Another chute's token cannot write this run's outputs.
        assert (await http.post(f"/v1/instances/jobs/{run_id}/outputs", files=files)).status_code == 404
    async with api.client(token) as http:
        for bad in ("../escape", "/etc/passwd", ".hidden", "a/../../b"):
            resp = await http.post(f"/v1/instances/jobs/{run_id}/outputs", files=[("files", (bad, b"x", "text/plain"))])
            assert resp.status_code == 422, (bad, resp.text)
        bad_status = [("files", ("status.json", b'{"status": "exploded"}', "application/json"))]
        assert (await http.post(f"/v1/instances/jobs/{run_id}/outputs", files=bad_status)).status_code == 422
        resp = await http.post(f"/v1/instances/jobs/{run_id}/outputs", files=files)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"run_id": run_id, "status": "succeeded", "outputs": ["plots/loss.csv", "status.json"]}
    async with api.client(key) as http:
        run = (await http.get(f"/v1/jobs/{run_id}")).json()
        assert run["status"] == "succeeded" and run["result"] == {"loss": 0.1} and run["finished_at"]
        csv = await http.get(f"/v1/jobs/{run_id}/outputs/plots/loss.csv")
        assert csv.status_code == 200 and csv.content == b"1,0.5\n2,0.1\n"
        assert (await http.get(f"/v1/jobs/{run_id}/outputs/nope.txt")).status_code == 404
    bob = await api.new_user("bob")
    async with api.client(bob) as http:
        assert (await http.get(f"/v1/jobs/{run_id}")).status_code == 404
