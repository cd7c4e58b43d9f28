"""The secrets API of the scheduler (no Nomad: the chutes here are not deployed, so nothing is applied):
ownership, names only in listings, sealed at rest, hostile names and values refused with 4xx, the key's
presence and identity checked at start-up."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import select

from chutes.identity import chute_id
from chutes.scheduler.app import close_services, open_services
from chutes.scheduler.metrics import SchedulerMetrics
from chutes.scheduler.secret_box import SecretsKeyError, generate_key
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute
from chutes.scheduler.store.secret_models import ChuteSecret
from tests.scheduler.helpers import manifest
from tests.scheduler.server import RunningScheduler, make_config, serve

pytestmark = pytest.mark.timeout(60)

KEY = generate_key()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningScheduler]:
    async with serve(make_config(tmp_path, secrets_key=KEY)) as running:
        yield running


async def _chute(api: RunningScheduler, owner: str, name: str, public: bool = False) -> str:
    async with api.services.store.session() as s:
        user = await users_repo.get_user_by_name(s, owner)
        assert user is not None
        s.add(Chute(id=chute_id(owner, name), owner_id=user.id, username=owner, name=name, slug=name,
                    manifest=manifest(owner, name), version="0" * 64, public=public, invoke_secret="s",
                    desired_instances=0, status="deleting"))  # fmt: skip
    return chute_id(owner, name)


async def test_owner_creates_replaces_lists_and_deletes(api: RunningScheduler) -> None:
    alice = await api.new_user("alice")
    async with api.client(alice) as http:
        created = await http.post("/v1/secrets", json={"chute": "my-model", "name": "HF_TOKEN", "value": "hf_one"})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["created"] is True and body["applied"] is False  # the chute is not deployed yet
        assert (body["chute_id"], body["chute_name"]) == (chute_id("alice", "my-model"), "my-model")
        assert "hf_one" not in created.text
        replaced = await http.post("/v1/secrets", json={"chute": "my-model", "name": "HF_TOKEN", "value": "hf_two"})
        assert replaced.status_code == 200 and replaced.json()["created"] is False
        await http.post("/v1/secrets", json={"chute": "other", "name": "API_KEY", "value": "k"})
        listed = (await http.get("/v1/secrets")).json()
        assert [(s["chute_name"], s["name"]) for s in listed] == [("my-model", "HF_TOKEN"), ("other", "API_KEY")]
        assert all(set(s) == {"name", "chute_id", "chute_name", "username", "created_at", "updated_at"} for s in listed)
        only = (await http.get("/v1/secrets", params={"chute": "other"})).json()
        assert [s["name"] for s in only] == ["API_KEY"]
        assert (await http.delete("/v1/secrets/API_KEY", params={"chute": "other"})).status_code == 204
        gone = await http.delete("/v1/secrets/API_KEY", params={"chute": "other"})
        assert gone.status_code == 404 and "has no secret API_KEY" in gone.json()["detail"]
    async with api.services.store.session() as s:
        rows = (await s.execute(select(ChuteSecret))).scalars().all()
    assert len(rows) == 1 and b"hf_two" not in rows[0].sealed and b"hf_" not in rows[0].sealed


async def test_another_user_can_neither_read_list_nor_overwrite(api: RunningScheduler) -> None:
    alice, bob = await api.new_user("alice"), await api.new_user("bob")
    private = await _chute(api, "alice", "private")
    public = await _chute(api, "alice", "public", public=True)
    async with api.client(alice) as http:
        for ref in (private, public):
            assert (
                await http.post("/v1/secrets", json={"chute": ref, "name": "TOKEN", "value": "a"})
            ).status_code == 201
    async with api.client(bob) as http:
        assert (await http.get("/v1/secrets")).json() == []
        assert (await http.get("/v1/secrets", params={"chute": private})).status_code == 404
        assert (await http.get("/v1/secrets", params={"all": "true"})).status_code == 403
        hidden = await http.post("/v1/secrets", json={"chute": private, "name": "TOKEN", "value": "evil"})
        assert hidden.status_code == 404
        visible = await http.post("/v1/secrets", json={"chute": public, "name": "TOKEN", "value": "evil"})
        assert visible.status_code == 403 and "only the owner" in visible.json()["detail"]
        assert (await http.delete("/v1/secrets/TOKEN", params={"chute": private})).status_code == 404
        # Bob naming "private" means *his* chute of that name: his own secret, alice's untouched.
        own = await http.post("/v1/secrets", json={"chute": "private", "name": "TOKEN", "value": "bobs"})
        assert own.status_code == 201 and own.json()["chute_id"] == chute_id("bob", "private") != private
    async with api.client(api.admin_key) as http:
        everyone = (await http.get("/v1/secrets", params={"all": "true"})).json()
        assert sorted((s["username"], s["chute_name"]) for s in everyone) == [
            ("alice", "private"), ("alice", "public"), ("bob", "private"),
        ]  # fmt: skip
        assert [s["name"] for s in (await http.get("/v1/secrets", params={"chute": private})).json()] == ["TOKEN"]
        overwrite = await http.post("/v1/secrets", json={"chute": private, "name": "TOKEN", "value": "admin"})
        assert overwrite.status_code == 403 and "names only" in overwrite.json()["hint"]
        assert (await http.delete("/v1/secrets/TOKEN", params={"chute": private})).status_code == 403
    async with api.services.store.session() as s:
        rows = (await s.execute(select(ChuteSecret).where(ChuteSecret.chute_id == private))).scalars().all()
    assert [api.services.secrets.open(r.sealed, f"{private}/TOKEN") for r in rows] == ["a"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "a/b", "A\x00B", "HF TOKEN", "x" * 200, "é", "", "1ABC", "CHUTES_INVOKE_SECRET",
             "NOMAD_TOKEN", "PATH", "LD_PRELOAD", "NVIDIA_VISIBLE_DEVICES", '"}}{{ key "x" }}'],
)  # fmt: skip
async def test_hostile_or_reserved_names_are_4xx(api: RunningScheduler, name: str) -> None:
    alice = await api.new_user("alice")
    async with api.client(alice) as http:
        created = await http.post("/v1/secrets", json={"chute": "c", "name": name, "value": "v"})
        assert created.status_code == 422 and created.json()["detail"]
        # (an empty name is /v1/secrets/, which redirects to /v1/secrets: no DELETE there, 405)
        deleted = await http.delete(f"/v1/secrets/{quote(name, safe='')}", params={"chute": "c"}, follow_redirects=True)
        assert 400 <= deleted.status_code < 500 and deleted.json()["detail"]
        assert (await http.delete("/v1/secrets/" + "A" * 5000, params={"chute": "c"})).status_code == 422


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"chute": "c", "name": "A", "value": "with\x00nul"}, 422),
        ({"chute": "c", "name": "A", "value": "carriage\rreturn"}, 422),
        ({"chute": "c", "name": "A", "value": ""}, 422),
        ({"chute": "c", "name": "A", "value": "x" * (16 * 1024 + 1)}, 422),
        ({"chute": "c", "name": "A", "value": "x" * (70 * 1024)}, 422),
        ({"chute": "../../etc", "name": "A", "value": "v-4f8a2c"}, 422),
        ({"chute": "a" * 300, "name": "A", "value": "v-4f8a2c"}, 422),
        ({"chute": "c\x00d", "name": "A", "value": "v-4f8a2c"}, 422),
        ({"chute": "00000000-0000-0000-0000-000000000000", "name": "A", "value": "v-4f8a2c"}, 404),
        ({"chute": "c", "name": "A", "value": "v-4f8a2c", "extra": 1}, 422),
        ({"chute": "c", "name": "A"}, 422),
    ],
)
async def test_bad_values_and_chute_references_are_4xx(
    api: RunningScheduler, body: dict[str, object], status: int
) -> None:
    alice = await api.new_user("alice")
    async with api.client(alice) as http:
        resp = await http.post("/v1/secrets", json=body)
    assert resp.status_code == status and resp.json()["detail"]
    if body.get("value"):
        assert str(body["value"])[:50] not in resp.text, "an error must not echo the value"


async def test_without_a_key_secrets_cannot_be_stored(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path)) as api:
        alice = await api.new_user("alice")
        async with api.client(alice) as http:
            resp = await http.post("/v1/secrets", json={"chute": "c", "name": "A", "value": "v"})
        assert resp.status_code == 503 and "CHUTES_SECRETS_KEY" in resp.json()["detail"]


async def test_start_up_refuses_a_missing_or_different_key(tmp_path: Path) -> None:
    config = make_config(tmp_path, secrets_key=KEY)
    async with serve(config) as api:
        alice = await api.new_user("alice")
        async with api.client(alice) as http:
            await http.post("/v1/secrets", json={"chute": "c", "name": "A", "value": "v"})
    with pytest.raises(SecretsKeyError, match=r"holds 1 chute secret.*CHUTES_SECRETS_KEY is not set"):
        await open_services(config.model_copy(update={"secrets_key": None}), "http://x", SchedulerMetrics())
    with pytest.raises(SecretsKeyError, match="is not the key 1 stored secret"):
        await open_services(config.model_copy(update={"secrets_key": generate_key()}), "http://x", SchedulerMetrics())
    services = await open_services(config, "http://x", SchedulerMetrics())  # the right key opens them
    await close_services(services)


def test_the_scheduler_makes_keys_and_refuses_a_malformed_one(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "chutes-scheduler")
    made = subprocess.run([exe, "secrets-key"], capture_output=True, text=True, timeout=30)
    assert made.returncode == 0 and len(made.stdout.strip()) == 44
    env = {"PATH": "/usr/bin:/bin", "CHUTES_SECRETS_KEY": "too-short", "HOME": str(tmp_path)}
    bad = subprocess.run([exe, "serve", "--port", "0", "--data-dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=30, env=env)  # fmt: skip
    assert bad.returncode == 2 and "CHUTES_SECRETS_KEY" in bad.stderr and "Hint:" in bad.stderr
