"""Instance endpoints: job output uploads (names checked, status.json sets the outcome), scoped to the run's own
token, which stops working once the run has finished (its outputs never change after that)."""

from __future__ import annotations

import json

import pytest

from chutes.identity import chute_id
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import jobs as jobs_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute
from chutes.scheduler.store.secrets import instance_token, run_token, token_secret
from tests.scheduler.helpers import manifest
from tests.scheduler.server import RunningScheduler

pytestmark = pytest.mark.timeout(60)


async def _job_chute(api: RunningScheduler, name: str) -> tuple[str, str, str, str]:
    """(chute id, instance token, run id, run token) of a chute with a pending run."""
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
        return cid, token, run.id, run_token(await token_secret(s), run.id)


async def test_outputs_upload_and_outcome(api: RunningScheduler) -> None:
    key = await api.new_user("alice")
    _, instance, run_id, token = await _job_chute(api, "trainer")
    _, other_instance, _, other_token = await _job_chute(api, "other")
    status = {"job": "train", "run_id": run_id, "status": "succeeded", "error": None, "result": {"loss": 0.1}}
    files = [
        ("files", ("status.json", json.dumps(status).encode(), "application/json")),
        ("files", ("plots/loss.csv", b"1,0.5\n2,0.1\n", "text/csv")),
    ]
    for wrong in (other_token, instance, other_instance, key):
        # Another run's token, an instance token (even of the run's own chute), a user key: refused alike.
        async with api.client(wrong) as http:
            assert (await http.post(f"/v1/instances/jobs/{run_id}/outputs", files=files)).status_code == 401
    async with api.client(token) as http:
        for bad in ("../escape", "/etc/passwd", ".hidden", "a/../../b"):
            resp = await http.post(f"/v1/instances/jobs/{run_id}/outputs", files=[("files", (bad, b"x", "text/plain"))])
            assert resp.status_code == 422, (bad, resp.text)
        bad_status = [("files", ("status.json", b'{"status": "exploded"}', "application/json"))]
        assert (await http.post(f"/v1/instances/jobs/{run_id}/outputs", files=bad_status)).status_code == 422
        resp = await http.post(f"/v1/instances/jobs/{run_id}/outputs", files=files)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"run_id": run_id, "status": "succeeded", "outputs": ["plots/loss.csv", "status.json"]}
        # The run has finished: its token no longer works, and nothing can change its outputs or outcome.
        forged = {"job": "train", "run_id": run_id, "status": "failed", "error": "tampered", "result": {"loss": 9}}
        again = [("files", ("status.json", json.dumps(forged).encode(), "application/json")),
                 ("files", ("plots/loss.csv", b"tampered\n", "text/csv"))]  # fmt: skip
        refused = await http.post(f"/v1/instances/jobs/{run_id}/outputs", files=again)
        assert refused.status_code == 403 and "finished" in refused.json()["detail"], refused.text
    async with api.client(key) as http:
        run = (await http.get(f"/v1/jobs/{run_id}")).json()
        assert run["status"] == "succeeded" and run["result"] == {"loss": 0.1} and run["finished_at"]
        csv = await http.get(f"/v1/jobs/{run_id}/outputs/plots/loss.csv")
        assert csv.status_code == 200 and csv.content == b"1,0.5\n2,0.1\n"
        assert (await http.get(f"/v1/jobs/{run_id}/outputs/nope.txt")).status_code == 404
    bob = await api.new_user("bob")
    async with api.client(bob) as http:
        assert (await http.get(f"/v1/jobs/{run_id}")).status_code == 404
