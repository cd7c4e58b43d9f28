"""The dashboard's pure views and its session keyring, without sockets."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chutes.scheduler.api.errors import APIError
from chutes.scheduler.metering import GPUInterval
from chutes.scheduler.placement import GPU, NodeState, PlacementRequest
from chutes.scheduler.ui.proxy import cord_url, encode_input
from chutes.scheduler.ui.session import Keyring
from chutes.scheduler.ui.views import gpu_holders, node_verdicts, running_cost, usage_by_model

CID = "6f1c2d3e-4a5b-5c6d-8e7f-0123456789ab"
KEY = "cnk_" + "k" * 43


def gpus(model: str, n: int, busy: int = 0, vram: int = 81920) -> tuple[GPU, ...]:
    return tuple(GPU(f"{model}-{i}", model, vram, in_use=i < busy) for i in range(n))


def test_each_node_gets_its_own_verdict_with_the_first_check_it_fails() -> None:
    nodes = [
        NodeState("fits", gpus("a100", 4, busy=1)),
        NodeState("full", gpus("a100", 2, busy=2)),
        NodeState("other-model", gpus("l40s", 2)),
        NodeState("dead", gpus("a100", 4), alive=False),
        NodeState("draining", gpus("a100", 4), eligible=False),
    ]
    request = PlacementRequest(CID, gpu_count=2, eligible_gpus=("a100",))
    verdicts = {v.node_id: v for v in node_verdicts(nodes, request)}
    fits = verdicts["fits"]
    assert fits.fits and fits.reason is None and fits.gpu_model == "a100" and len(fits.gpu_uuids) == 2
    assert fits.label.startswith("fits: 2x a100 at $")
    assert "a100-0" not in fits.gpu_uuids  # the busy GPU is not offered
    assert [(n, verdicts[n].reason, verdicts[n].label) for n in ("full", "other-model", "dead", "draining")] == [
        ("full", "exhausted", "not enough free GPUs"),
        ("other-model", "wrong_model", "wrong GPU model"),
        ("dead", "not_alive", "agent not alive"),
        ("draining", "ineligible", "ineligible in Nomad"),
    ]
    assert all(verdicts[n].hint for n in ("full", "other-model", "dead", "draining"))


def _alloc(alloc_id: str, job: str, uuids: list[str], status: str = "running") -> dict[str, object]:
    devices = [{"Name": "nvidia/gpu", "Type": "gpu", "DeviceIDs": uuids}, {"Type": "fpga", "DeviceIDs": ["x"]}]
    return {
        "ID": alloc_id, "JobID": job, "DesiredStatus": "run", "ClientStatus": status,
        "AllocatedResources": {"Tasks": {"runtime": {"Devices": devices}}},
    }  # fmt: skip


def test_gpu_holders_come_from_active_allocations_of_chute_jobs_and_job_runs() -> None:
    holders = gpu_holders(
        [
            _alloc("a1", f"chute-{CID}", ["g0", "g1"]),
            _alloc("a2", f"chute-{CID}-job-train/dispatch-1700000000-abcd", ["g2"]),
            _alloc("a3", "some-other-job", ["g3"]),
            _alloc("a4", f"chute-{CID}", ["g4"], status="complete"),
        ]
    )
    assert {u: (h.instance_id, h.chute_id) for u, h in holders.items()} == {
        "g0": ("a1", CID),
        "g1": ("a1", CID),
        "g2": ("a2", CID),
        "g3": ("a3", None),
    }


def test_usage_by_model_adds_up_per_model_within_the_days() -> None:
    day = 20000
    start = day * 86400.0
    intervals = [
        GPUInterval("u", "alice", CID, "c", "a100", 2, Decimal("1.80"), start + 3600, start + 7200),
        GPUInterval("u", "alice", CID, "c", "a100", 1, Decimal("1.80"), start - 3600, start + 3600),  # half before
        GPUInterval("u", "alice", CID, "c", "l40s", 1, Decimal("0.90"), start + 86400 - 60, None),  # running
    ]
    rows = usage_by_model(intervals, day, day, now=start + 86400 + 600)
    by = {r.gpu_model: r for r in rows}
    assert by["a100"].gpu_seconds == Decimal(2 * 3600 + 3600)
    assert by["a100"].cost_usd == Decimal("5.40")
    assert by["l40s"].gpu_seconds == Decimal(60)  # cut at the end of the day asked for
    assert [r.gpu_model for r in rows] == ["a100", "l40s"]  # the costliest first


def test_running_cost() -> None:
    assert running_cost(1000.0, 1000.0 + 1800, 2, Decimal("2.00")) == Decimal("2.000000")
    assert running_cost(1000.0, 900.0, 1, Decimal("2.00")) == 0  # a clock behind: never negative


def test_sessions_are_sealed_expire_and_belong_to_one_secret() -> None:
    keyring = Keyring("s" * 64, ttl_s=600)
    sealed = keyring.seal(KEY, now=1_000_000)
    assert KEY not in sealed.cookie and sealed.expires_at == 1_000_600
    assert keyring.open(sealed.cookie, now=1_000_599) == (KEY, 1_000_600)
    assert keyring.open(sealed.cookie, now=1_000_601) is None
    assert Keyring("t" * 64, ttl_s=600).open(sealed.cookie, now=1_000_001) is None
    assert keyring.open(sealed.cookie[:-3] + "abc", now=1_000_001) is None
    assert keyring.open("é" * 10) is None and keyring.open("x" * 5000) is None
    assert keyring.csrf_ok(sealed.cookie, sealed.csrf)
    assert not keyring.csrf_ok(sealed.cookie, None) and not keyring.csrf_ok(sealed.cookie, sealed.csrf[:-1])
    assert keyring.seal("not-a-key").cookie and keyring.open(keyring.seal("not-a-key").cookie) is None


def test_cord_addresses_are_built_from_known_parts_only() -> None:
    assert (
        cord_url("http://gw", "alice", "my-model", "/v1/chat/completions")
        == "http://gw/alice/my-model/v1/chat/completions"
    )
    assert cord_url("http://gw", "alice", "m", "/a b?c#d") == "http://gw/alice/m/a%20b%3Fc%23d"
    with pytest.raises(APIError):
        cord_url("http://gw", "alice", "m", "/../../admin")
    assert encode_input("POST", {"a": 1}) == (b'{"a":1}', "")
    assert encode_input("GET", {"a": 1, "b": True, "c": "x y"}) == (None, "a=1&b=true&c=x+y")
    with pytest.raises(APIError):
        encode_input("GET", {"a": [1]})
    with pytest.raises(APIError) as too_big:
        encode_input("POST", {"a": "x" * 70_000})
    assert too_big.value.status == 413
