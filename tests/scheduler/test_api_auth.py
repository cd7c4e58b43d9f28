"""The API's authentication matrix: anonymous 401, wrong key kinds, admin-only routes, another user's chute 404."""

from __future__ import annotations

import re

import pytest

from chutes.identity import chute_id
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute
from chutes.scheduler.store.secrets import instance_token, token_secret
from tests.scheduler.helpers import manifest
from tests.scheduler.server import RunningScheduler

pytestmark = pytest.mark.timeout(60)

OPEN_PATHS = {"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def _routes(api: RunningScheduler) -> list[tuple[str, str]]:
    async with api.client() as http:
        spec = (await http.get("/openapi.json")).json()
    return [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if p not in OPEN_PATHS]


async def _add_chute(api: RunningScheduler, owner: str, name: str, public: bool = False) -> Chute:
    async with api.services.store.session() as s:
        user = await users_repo.get_user_by_name(s, owner)
        assert user is not None
        chute = Chute(
            id=chute_id(owner, name), owner_id=user.id, username=owner, name=name, slug=name,
            manifest=manifest(owner, name), version="0" * 64, public=public, invoke_secret="secret",
            desired_instances=0, status="ready",
        )  # fmt: skip
        s.add(chute)
    return chute


async def test_health_and_docs_are_open(api: RunningScheduler) -> None:
    async with api.client() as http:
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert (await http.get("/docs")).status_code == 200
        spec = (await http.get("/openapi.json")).json()
    for path in ("/v1/me", "/v1/chutes", "/v1/keys", "/v1/instances/bundle", "/v1/internal/authenticate"):
        assert path in spec["paths"], path


async def test_every_route_refuses_anonymous_callers(api: RunningScheduler) -> None:
    routes = await _routes(api)
    assert len(routes) >= 15
    async with api.client() as http:
        for method, path in routes:
            resp = await http.request(method, _concrete(path))
            assert resp.status_code == 401, (method, path, resp.status_code, resp.text)
            body = resp.json()
            assert body["detail"] and "hint" in body
            assert resp.headers.get("www-authenticate") == "Bearer"
            bad = await http.request(method, _concrete(path), headers={"Authorization": "Basic abc"})
            assert bad.status_code == 401, (method, path)
            fake = await http.request(method, _concrete(path), headers={"Authorization": "Bearer cnk_" + "x" * 43})
            assert fake.status_code == 401, (method, path)


async def test_keys_shown_once_listed_without_secret_and_revoked(api: RunningScheduler) -> None:
    key = await api.new_user("alice")
    async with api.client(key) as http:
        me = (await http.get("/v1/me")).json()
        assert me["username"] == "alice" and me["is_admin"] is False
        created = await http.post("/v1/keys", json={"name": "ci"})
        assert created.status_code == 201
        second = created.json()["api_key"]
        listed = (await http.get("/v1/keys")).json()
        assert [k["name"] for k in listed] == ["default", "ci"]
        assert all("api_key" not in k and second not in str(k) for k in listed)
        key_id = created.json()["key_id"]
    async with api.client(second) as http:
        assert (await http.get("/v1/me")).status_code == 200
        assert (await http.delete(f"/v1/keys/{key_id}")).status_code == 204
        assert (await http.get("/v1/me")).status_code == 401
    async with api.client(key) as http:
        assert (await http.delete("/v1/keys/nope")).status_code == 404
        assert (await http.get("/v1/keys")).json()[1]["revoked_at"] is not None


async def test_admin_only_and_roles(api: RunningScheduler) -> None:
    key = await api.new_user("alice")
    async with api.client(key) as http:
        resp = await http.post("/v1/users", json={"username": "mallory"})
        assert resp.status_code == 403 and resp.json()["detail"]
        assert (await http.post("/v1/keys", json={"role": "gateway"})).status_code == 403
        assert (await http.post("/v1/internal/authenticate", json={"api_key": key})).status_code == 403
    async with api.client(api.admin_key) as http:
        assert (await http.get("/v1/me")).json()["is_admin"] is True
        assert (await http.post("/v1/users", json={"username": "alice"})).status_code == 409
        bad = await http.post("/v1/users", json={"username": "Not Valid"})
        assert bad.status_code == 422 and "username" in bad.json()["detail"]
        gw = await http.post("/v1/keys", json={"name": "gw", "role": "gateway"})
        assert gw.status_code == 201
        gateway_key = gw.json()["api_key"]
    async with api.client(gateway_key) as http:
        ident = await http.post("/v1/internal/authenticate", json={"api_key": key})
        assert ident.status_code == 200 and ident.json()["username"] == "alice"
        assert (await http.post("/v1/internal/authenticate", json={"api_key": "cnk_nope"})).status_code == 401
        # A gateway key can do nothing else.
        assert (await http.get("/v1/chutes")).status_code == 403
        assert (await http.get("/v1/me")).status_code == 200


async def test_another_users_private_chute_is_not_found(api: RunningScheduler) -> None:
    alice = await api.new_user("alice")
    bob = await api.new_user("bob")
    chute = await _add_chute(api, "alice", "secret-model")
    await _add_chute(api, "alice", "open-model", public=True)
    async with api.client(alice) as http:
        assert (await http.get(f"/v1/chutes/{chute.id}")).status_code == 200
        assert (await http.get("/v1/chutes/secret-model")).json()["chute_id"] == chute.id
        assert (await http.get("/v1/chutes/secret-model/events")).status_code == 200
        assert [c["name"] for c in (await http.get("/v1/chutes")).json()] == ["open-model", "secret-model"]
    async with api.client(bob) as http:
        for method, path in [
            ("GET", f"/v1/chutes/{chute.id}"),
            ("GET", f"/v1/chutes/{chute.id}/events"),
            ("GET", f"/v1/chutes/{chute.id}/instances"),
            ("GET", f"/v1/chutes/{chute.id}/logs"),
            ("DELETE", f"/v1/chutes/{chute.id}"),
            ("POST", f"/v1/chutes/{chute.id}/scale"),
            ("POST", f"/v1/jobs/{chute.id}/train"),
        ]:
            kwargs = {"json": {"instances": 1}} if path.endswith("scale") else {}
            resp = await http.request(method, path, **kwargs)
            assert resp.status_code == 404, (method, path, resp.text)
            assert resp.json()["detail"] == f"chute {chute.id!r} not found"
        assert (await http.get("/v1/chutes")).json() == []
        # A public chute is visible, but only its owner may change it.
        public_id = chute_id("alice", "open-model")
        assert (await http.get(f"/v1/chutes/{public_id}")).status_code == 200
        assert (await http.post(f"/v1/chutes/{public_id}/scale", json={"instances": 0})).status_code == 403
    async with api.client(alice) as http:
        assert (await http.post(f"/v1/chutes/{chute.id}/share", json={"username": "bob"})).status_code == 200
    async with api.client(bob) as http:
        got = await http.get(f"/v1/chutes/{chute.id}")
        assert got.status_code == 200 and got.json()["shared_with"] == []
    async with api.client(api.admin_key) as http:
        assert (await http.get(f"/v1/chutes/{chute.id}")).json()["shared_with"] == ["bob"]
        assert len((await http.get("/v1/chutes", params={"all": "true"})).json()) == 2


async def test_instance_endpoints_take_only_instance_tokens(api: RunningScheduler) -> None:
    alice = await api.new_user("alice")
    chute = await _add_chute(api, "alice", "echo")
    async with api.services.store.session() as s:
        token = instance_token(await token_secret(s), chute.id, "0" * 64)
        await chutes_repo.put_version(s, chute.id, "0" * 64, b"bundle-bytes", chute.manifest, token)
    async with api.client(alice) as http:
        resp = await http.get("/v1/instances/bundle")
        assert resp.status_code == 401 and "instance" in resp.json()["hint"]
    async with api.client(api.admin_key) as http:
        assert (await http.get("/v1/instances/bundle")).status_code == 401
    async with api.client(token) as http:
        resp = await http.get("/v1/instances/bundle")
        assert resp.status_code == 200 and resp.content == b"bundle-bytes"
        assert resp.headers["x-chutes-bundle-sha256"] == "0" * 64
        # ... and an instance token opens nothing else.
        assert (await http.get("/v1/me")).status_code == 401
        assert (await http.get("/v1/chutes")).status_code == 401
    async with api.client("cit_forged") as http:
        assert (await http.get("/v1/instances/bundle")).status_code == 401


async def test_errors_are_json_never_500(api: RunningScheduler) -> None:
    key = await api.new_user("alice")
    async with api.client(key) as http:
        for method, path, kwargs in [
            ("POST", "/v1/keys", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
            ("POST", "/v1/keys", {"json": {"name": "x", "unknown": 1}}),
            ("POST", "/v1/chutes", {}),
            ("POST", "/v1/chutes", {"data": {"manifest": "{}"}}),
            ("GET", "/v1/nowhere", {}),
            ("PUT", "/v1/me", {}),
        ]:
            resp = await http.request(method, path, **kwargs)
            assert 400 <= resp.status_code < 500, (method, path, resp.status_code, resp.text)
            assert isinstance(resp.json()["detail"], str)


async def test_internal_routes_and_wake_lookup(api: RunningScheduler) -> None:
    await api.new_user("alice")
    chute = await _add_chute(api, "alice", "echo")
    async with api.client(api.admin_key) as http:
        route = await http.get("/v1/internal/routes/alice/echo")
        assert route.status_code == 200
        body = route.json()
        assert body["chute_id"] == chute.id and body["service"] == f"chute-{chute.id}"
        assert body["invoke_secret"] == "secret" and body["cords"][0]["public_api_path"] == "/echo"
        assert (await http.get("/v1/internal/routes/alice/missing")).status_code == 404
        assert (await http.post("/v1/internal/chutes/nope/wake")).status_code == 404
