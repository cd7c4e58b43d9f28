"""The metering API on a real scheduler: pricing, invocation reports from gateways, usage per user/chute/day."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chutes.identity import chute_id
from chutes.scheduler import metering, utilisation
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.metering_models import InstanceUsage
from chutes.scheduler.store.models import Chute
from tests.scheduler.helpers import manifest
from tests.scheduler.server import RunningScheduler

pytestmark = pytest.mark.timeout(60)

DAY = 86400


async def _setup(api: RunningScheduler) -> tuple[str, str, str, str]:
    """alice (owner of 'echo') and bob; returns their keys and ids."""
    alice_key = await api.new_user("alice")
    bob_key = await api.new_user("bob")
    async with api.services.store.session() as s:
        alice = await users_repo.get_user_by_name(s, "alice")
        bob = await users_repo.get_user_by_name(s, "bob")
        assert alice is not None and bob is not None
        s.add(
            Chute(
                id=chute_id("alice", "echo"),
                owner_id=alice.id,
                username="alice",
                name="echo",
                slug="echo",
                manifest=manifest("alice", "echo"),
                version="0" * 64,
                invoke_secret="s",
                desired_instances=1,
                status="ready",
                public=True,
            )
        )
    return alice_key, bob_key, alice.id, bob.id


async def test_pricing_lists_the_catalog(api: RunningScheduler) -> None:
    key = await api.new_user("carol")
    async with api.client(key) as http:
        resp = await http.get("/v1/pricing")
    async with api.client() as http:
        anon = await http.get("/v1/pricing")
    assert anon.status_code == 401
    assert resp.status_code == 200
    prices = {g["id"]: g for g in resp.json()["gpus"]}
    assert Decimal(prices["h100_sxm"]["hourly_usd"]) == Decimal("2.35")
    assert Decimal(prices["a100"]["per_second_usd"]) == (Decimal("1.20") / 3600).quantize(Decimal("1e-10"))
    assert prices["mi300x"]["schedulable"] is False


async def test_invocation_reports_need_a_gateway_key_and_are_idempotent(api: RunningScheduler) -> None:
    alice_key, _, alice_id, _ = await _setup(api)
    cid = chute_id("alice", "echo")
    now = time.time()
    records = [
        {"invocation_id": f"inv{n}", "chute_id": cid, "caller": alice_id, "cord": "echo", "status": 200,
         "duration_ms": 12.5, "bytes_in": 10, "bytes_out": 20, "started_at": now - n}
        for n in range(5)
    ]  # fmt: skip
    async with api.client(alice_key) as http:
        assert (await http.post("/v1/internal/invocations", json={"records": records})).status_code == 403
    async with api.client(api.admin_key) as http:
        first = await http.post("/v1/internal/invocations", json={"records": records})
        again = await http.post("/v1/internal/invocations", json={"records": records})
        bad = await http.post("/v1/internal/invocations", json={"records": [{"invocation_id": "x"}]})
    assert first.status_code == 202 and first.json() == {"accepted": 5}
    assert again.status_code == 202
    assert bad.status_code == 422 and "detail" in bad.json()
    async with api.client(alice_key) as http:
        usage = (await http.get("/v1/usage")).json()
    assert usage["total"]["invocations"] == 5
    (line,) = usage["lines"]
    assert (line["username"], line["chute_name"], line["bytes_in"], line["bytes_out"]) == ("alice", "echo", 50, 100)


async def test_a_utilisation_report_rides_with_a_batch_and_its_gateway_id_stays_with_its_key(
    api: RunningScheduler,
) -> None:
    _, _, alice_id, _ = await _setup(api)
    cid = chute_id("alice", "echo")
    async with api.client(api.admin_key) as http:
        keys = [(await http.post("/v1/keys", json={"name": f"gw{n}", "role": "gateway"})).json()["api_key"]
                for n in range(2)]  # fmt: skip
    now = time.time()
    report = {"gateway_id": "gw-a", "at": now, "since": None,
              "chutes": {cid: {"held": 0, "completed": 1, "last_call_at": now,
                               "instances": {"i1": {"in_flight": 2}}}}}  # fmt: skip
    record = {"invocation_id": "u1", "chute_id": cid, "caller": alice_id, "cord": "echo", "status": 200,
              "duration_ms": 1, "started_at": now}  # fmt: skip
    async with api.client(keys[0]) as http:
        first = await http.post("/v1/internal/invocations", json={"records": [record], "utilisation": report})
        idle = await http.post("/v1/internal/invocations", json={"records": [], "utilisation": report})
        bad = await http.post("/v1/internal/invocations", json={"records": [], "utilisation": {**report, "at": -1}})
    assert first.status_code == 202 and first.json() == {"accepted": 1}
    assert idle.status_code == 202 and idle.json() == {"accepted": 0}
    assert bad.status_code == 422 and "utilisation.at" in bad.json()["detail"]
    # Another gateway key cannot report as gw-a (nor slip its records in with that report).
    spoof = {**report, "chutes": {cid: {"instances": {"i1": {"in_flight": 0}}}}}
    stray = {**record, "invocation_id": "u2"}
    async with api.client(keys[1]) as http:
        refused = await http.post("/v1/internal/invocations", json={"records": [stray], "utilisation": spoof})
        own = await http.post(
            "/v1/internal/invocations", json={"records": [], "utilisation": {**spoof, "gateway_id": "gw-b"}}
        )
    assert refused.status_code == 403 and "gw-a" in refused.json()["detail"] and refused.json()["hint"]
    assert own.status_code == 202
    async with api.services.store.session() as s:
        stored = {r.report.gateway_id: r.report for r in await utilisation.received_since(s, 0)}
        calls = await metering.calls_for(s, 0, 10**6, None, cid)
    assert stored["gw-a"].chutes[cid].instances["i1"].in_flight == 2 and set(stored) == {"gw-a", "gw-b"}
    assert sum(c.calls for c in calls) == 1


async def test_usage_totals_exact_to_the_cent_and_scoped_per_user(api: RunningScheduler) -> None:
    alice_key, bob_key, alice_id, bob_id = await _setup(api)
    cid = chute_id("alice", "echo")
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    t0 = float(metering.epoch_day_of(yesterday) * DAY)
    async with api.services.store.session() as s:
        # 2× h100_sxm for 90 min yesterday ($7.05); 1× a100 from 23:30 yesterday to 00:45 today ($0.60 + $0.90)
        s.add(InstanceUsage(alloc_id="a1", chute_id=cid, chute_name="echo", owner_id=alice_id, owner_username="alice",
                            gpu_model="h100_sxm", gpu_count=2, hourly_usd_per_gpu=Decimal("2.35"),
                            ready_at=t0 + 3600, stopped_at=t0 + 3600 + 5400, last_seen_at=t0 + 9000))  # fmt: skip
        s.add(InstanceUsage(alloc_id="a2", chute_id=cid, chute_name="echo", owner_id=alice_id, owner_username="alice",
                            gpu_model="a100", gpu_count=1, hourly_usd_per_gpu=Decimal("1.20"),
                            ready_at=t0 + DAY - 1800, stopped_at=t0 + DAY + 2700, last_seen_at=t0 + DAY))  # fmt: skip
    calls = [
        {"invocation_id": "b1", "chute_id": cid, "caller": bob_id, "cord": "echo", "status": 200,
         "duration_ms": 5, "bytes_in": 1, "bytes_out": 2, "started_at": t0 + 7200},
        {"invocation_id": "b2", "chute_id": cid, "caller": bob_id, "cord": "echo", "status": 429,
         "duration_ms": 1, "bytes_in": 1, "bytes_out": 0, "started_at": t0 + 7300},
    ]  # fmt: skip
    async with api.client(api.admin_key) as http:
        assert (await http.post("/v1/internal/invocations", json={"records": calls})).status_code == 202

    async with api.client(alice_key) as http:
        mine = (await http.get("/v1/usage", params={"start": str(yesterday)})).json()
        forbidden = await http.get("/v1/usage", params={"everyone": "true"})
        by_chute = (await http.get("/v1/usage", params={"start": str(yesterday), "chute": "echo"})).json()
        missing = await http.get("/v1/usage", params={"chute": "nope"})
        backwards = await http.get("/v1/usage", params={"start": "2025-02-02", "end": "2025-02-01"})
    assert forbidden.status_code == 403
    assert missing.status_code == 404
    assert backwards.status_code == 422
    costs = {ln["day"]: Decimal(ln["cost_usd"]) for ln in mine["lines"]}
    assert costs == {str(yesterday): Decimal("7.65"), str(today): Decimal("0.90")}
    assert Decimal(mine["total"]["cost_usd"]) == Decimal("8.55")
    assert Decimal(mine["total"]["gpu_seconds"]) == Decimal(2 * 5400 + 4500)
    assert mine["total"]["invocations"] == 0  # bob's calls count for bob, the GPU time for alice
    assert by_chute["total"] == mine["total"]

    async with api.client(bob_key) as http:
        bobs = (await http.get("/v1/usage", params={"start": str(yesterday)})).json()
    assert bobs["total"]["invocations"] == 2 and bobs["total"]["errors"] == 1
    assert Decimal(bobs["total"]["cost_usd"]) == Decimal(0)

    async with api.client(api.admin_key) as http:
        everyone = (await http.get("/v1/usage", params={"start": str(yesterday), "everyone": "true"})).json()
        only_bob = (await http.get("/v1/usage", params={"start": str(yesterday), "username": "bob"})).json()
    assert {ln["username"] for ln in everyone["lines"]} == {"alice", "bob"}
    assert Decimal(everyone["total"]["cost_usd"]) == Decimal("8.55")
    assert only_bob["total"] == bobs["total"]
