"""The scheduler's edge: connection limits, JSON nesting bounded (the manifest and JSON bodies: 422, never
500), failed key lookups throttled per client address (429 + Retry-After) while known keys keep working."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.scheduler.helpers import bundle, manifest
from tests.scheduler.server import RunningScheduler, make_config, serve

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningScheduler]:
    async with serve(make_config(tmp_path, auth_failure_burst=4, auth_failure_rate=0.2)) as running:
        yield running


async def test_oversized_headers_are_431(api: RunningScheduler) -> None:
    async with api.client(api.admin_key) as http:
        resp = await http.get("/v1/me", headers={"X-Padding": "p" * 20_000})
        assert resp.status_code == 431 and "over 16384 bytes" in resp.json()["detail"]
        assert (await http.get("/v1/me")).status_code == 200


async def test_deeply_nested_json_is_422_never_500(api: RunningScheduler) -> None:
    key = await api.new_user("alice")
    deep = "[" * 100_000 + "]" * 100_000
    man = manifest("alice", "deep")
    text = json.dumps(man)[:-1] + ', "readme": ' + deep + "}"  # a manifest with a deep value
    async with api.client(key) as http:
        resp = await http.post(
            "/v1/chutes", data={"manifest": text}, files={"bundle": ("b.tar.gz", bundle(), "application/gzip")}
        )
        assert resp.status_code == 422 and "nested deeper than 64" in resp.json()["detail"], resp.text
        for body in (deep, '{"a": ' + "[" * 70 + "]" * 70 + "}"):
            resp = await http.post("/v1/jobs/nothing/train", content=body, headers={"content-type": "application/json"})
            assert resp.status_code == 422 and "nested deeper than 64" in resp.json()["detail"], resp.text


async def test_failed_lookups_are_throttled_per_address_and_known_keys_pass(api: RunningScheduler) -> None:
    alice = await api.new_user("alice")
    async with api.client(alice) as http:
        assert (await http.get("/v1/me")).status_code == 200  # alice's key authenticated from this address
    statuses = []
    for i in range(8):
        async with api.client("cnk_" + str(i).rjust(43, "z")) as http:
            resp = await http.get("/v1/me")
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                assert int(resp.headers["retry-after"]) >= 1
                assert "failed authentications" in resp.json()["detail"]
    assert statuses == [401] * 4 + [429] * 4
    async with api.client(alice) as http:
        assert (await http.get("/v1/me")).status_code == 200  # not slowed, not refused
    bob = await api.new_user("bob")  # admin's key is known too: creating a user works from this address
    async with api.client(bob) as http:
        # A valid key this scheduler has not seen yet waits like the unknown ones from a throttled address.
        assert (await http.get("/v1/me")).status_code == 429
    async with api.client("not-a-key") as http:
        assert (await http.get("/v1/me")).status_code == 401  # malformed: refused without a lookup, not counted


async def test_the_dashboards_sign_in_shares_the_failure_throttle(api: RunningScheduler) -> None:
    """Guessing keys at the dashboard's sign-in form costs the same budget as at the API: past it, 429 before
    any lookup; a key that authenticated lately still signs in."""
    alice = await api.new_user("alice")
    async with api.client() as http:
        assert (await http.post("/ui/api/session", json={"api_key": alice})).status_code == 200
        statuses = []
        for i in range(6):
            resp = await http.post("/ui/api/session", json={"api_key": "cnk_" + str(i).rjust(43, "y")})
            statuses.append(resp.status_code)
        assert statuses == [401] * 4 + [429] * 2
        assert int(resp.headers["retry-after"]) >= 1 and "failed authentications" in resp.json()["detail"]
    async with api.client("cnk_" + "w" * 43) as http:
        assert (await http.get("/v1/me")).status_code == 429  # the same address, the same budget, at the API
    async with api.client() as http:
        assert (await http.post("/ui/api/session", json={"api_key": alice})).status_code == 200
