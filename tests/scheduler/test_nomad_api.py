"""NomadClient against a real devcluster: python-nomad calls, its gaps (scale, blocking, dispatch token, log
streaming) and the translation of Nomad's errors."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import requests

from chutes.chute.node_selector import NodeSelector
from chutes.identity import chute_id
from chutes.manifest import CordSpec, ImageSpec, JobSpec, Manifest
from chutes.scheduler.nomad_api import (
    AllocationNotFound,
    IndexConflict,
    JobNotFound,
    NomadClient,
    NomadForbidden,
    NomadRejected,
    NomadUnavailable,
    allocation_gpu_ids,
    allocation_port,
    explain_metric,
)
from chutes.scheduler.render import ChuteRelease, RenderSettings, render_batch_job, render_chute_job
from tests.support.devcluster import DevclusterHandle, devcluster
from tests.support.polling import apoll_until

pytestmark = pytest.mark.timeout(60)

SHA = hashlib.sha256(b"x").hexdigest()
# A stand-in runtime: prints, then serves nothing for a while (the readiness check fails, which is fine here).
SCRIPT = (
    "import sys, time; print('hello from', sys.argv[1:], flush=True); "
    "[print('tick', flush=True) or time.sleep(0.2) for _ in iter(int, 1)]"
)


@pytest.fixture(scope="module")
def dc() -> Iterator[DevclusterHandle]:
    with devcluster(nodes=["gpu-a=h100_sxm:8", "gpu-b=a100:4"], local_node=False) as handle:
        for node in handle.nomad().nodes.get_nodes():
            model = "h100_sxm" if node["Name"] == "gpu-a" else "a100"
            requests.post(
                f"{handle.nomad_addr}/v1/client/metadata",
                json={"NodeID": node["ID"], "Meta": {"chutes_gpu_model": model}},
                timeout=5,
            ).raise_for_status()
        yield handle


@pytest.fixture
async def client(dc: DevclusterHandle) -> AsyncIterator[NomadClient]:
    async with NomadClient(dc.nomad_addr, timeout_s=5) as c:
        yield c


def manifest(name: str, include: list[str], jobs: list[JobSpec] | None = None, gpu_count: int = 1) -> Manifest:
    return Manifest(
        chute_id=chute_id("alice", name),
        username="alice",
        name=name,
        image=ImageSpec(ref="python:3.12"),
        node_selector=NodeSelector(gpu_count=gpu_count, include=include),
        cords=[] if jobs else [CordSpec(name="f", path="/f", public_api_path="/f")],
        jobs=jobs or [],
        sdk_version="0.1.0",
    )


def settings() -> RenderSettings:
    return RenderSettings(
        scheduler_url="http://127.0.0.1:1",
        runtime_command=(sys.executable, "-u", "-c", SCRIPT),
        cpu_mhz_per_gpu=100,
        memory_mb_per_gpu=64,
    )


def chute_job(name: str, include: list[str], count: int = 1, gpu_count: int = 1) -> dict[str, Any]:
    release = ChuteRelease(SHA, count=count)
    return render_chute_job(manifest(name, include, gpu_count=gpu_count), release, settings())


async def register(client: NomadClient, job: dict[str, Any]) -> None:
    """Write the job's Nomad Variable (its template waits for it), then register the job."""
    items = {"CHUTES_INVOKE_SECRET": "sec", f"CHUTES_INSTANCE_TOKEN_{SHA[:12]}": "tok"}
    await client.put_variable(f"nomad/jobs/{job['ID']}", items)
    await client.register_job(job)


async def test_register_read_list_and_enforced_index(client: NomadClient) -> None:
    job = chute_job("reg", ["a100"], count=0)
    created = await client.register_job(job, enforce_index=0)
    assert created.eval_id and created.job_modify_index > 0
    read = await client.read_job(job["ID"])
    assert (read["ID"], read["Meta"]["chute_id"]) == (job["ID"], job["Meta"]["chute_id"])
    assert read["JobModifyIndex"] == created.job_modify_index
    listed = await client.list_jobs("chute-", meta=True)
    assert any(j["ID"] == job["ID"] and j["Meta"]["chute_id"] == job["Meta"]["chute_id"] for j in listed)
    assert await client.list_jobs("no-such-prefix-") == []
    # A second creator loses the race instead of overwriting.
    with pytest.raises(IndexConflict) as conflict:
        await client.register_job(job, enforce_index=0)
    assert "changed" in str(conflict.value) and conflict.value.hint
    job["TaskGroups"][0]["Count"] = 1
    updated = await client.register_job(job, enforce_index=created.job_modify_index)
    assert updated.job_modify_index > created.job_modify_index
    assert (await client.read_job(job["ID"]))["TaskGroups"][0]["Count"] == 1
    assert await client.deregister_job(job["ID"], purge=True)
    assert await client.find_job(job["ID"]) is None


async def test_scale_blocking_allocations_and_gpu_ids(client: NomadClient) -> None:
    job = chute_job("scale", ["a100"], count=0)
    await register(client, job)
    first = await client.blocking_get("job", job["ID"], "allocations", index=0, wait_s=1)
    assert first.value == [] and first.index > 0
    # Nothing changes: the blocking query returns after about its wait, with the same index.
    started = time.monotonic()
    idle = await client.blocking_get("job", job["ID"], "allocations", index=first.index, wait_s=0.5)
    assert time.monotonic() - started >= 0.45
    assert idle.value == []
    # A scale while a watcher waits wakes it with the new allocations.
    watcher = asyncio.create_task(client.blocking_get("job", job["ID"], "allocations", index=first.index, wait_s=20))
    await asyncio.sleep(0.2)
    assert not watcher.done()
    eval_id = await client.scale_job(job["ID"], 2, message="test scale")
    assert eval_id
    woke = await asyncio.wait_for(watcher, 10)
    assert woke.index > first.index
    assert len(woke.value) >= 1
    assert (await client.read_job(job["ID"]))["TaskGroups"][0]["Count"] == 2

    async def two_running() -> list[dict[str, Any]]:
        allocs = await client.job_allocations(job["ID"])
        return allocs if len([a for a in allocs if a["ClientStatus"] == "running"]) == 2 else []

    allocs = await apoll_until(two_running, "two running", timeout=10.0)
    assert {a["NodeName"] for a in allocs} == {"gpu-b"}  # only gpu-b has a100s
    full = await client.read_allocation(allocs[0]["ID"])
    gpus = allocation_gpu_ids(full)
    assert len(gpus) == 1 and gpus[0].startswith("GPU-")
    assert allocation_port(full, "http")
    with_resources = await client.allocations(filter_=f'JobID == "{job["ID"]}"')
    full_allocs = [await client.read_allocation(a["ID"]) for a in allocs]
    expected = sorted(g for a in full_allocs for g in allocation_gpu_ids(a))
    assert sorted(g for a in with_resources for g in allocation_gpu_ids(a)) == expected
    assert len(set(expected)) == 2
    summary = await client.job_summary(job["ID"])
    assert summary["JobID"] == job["ID"]
    await client.deregister_job(job["ID"])
    with pytest.raises(JobNotFound):
        await client.scale_job(job["ID"], 1)


async def test_unplaceable_job_explains_itself_through_its_evaluation(client: NomadClient) -> None:
    job = chute_job("unplaceable", ["l40s"])  # no node has l40s
    result = await client.register_job(job)
    assert result.eval_id

    async def evaluated() -> Any:
        ev = await client.read_evaluation(result.eval_id or "")
        return ev if ev.status in ("complete", "failed") else None

    ev = await apoll_until(evaluated, "evaluated", timeout=10.0)
    assert ev.placement_failed
    text = ev.explanation()
    assert text.startswith("instance: 0 of 2 nodes")
    assert "chutes_gpu_model" in text
    assert [e.id for e in await client.job_evaluations(job["ID"])]
    await client.deregister_job(job["ID"])


def test_explain_metric_reads_nomads_allocation_metric() -> None:
    metric = {
        "NodesEvaluated": 3,
        "NodesFiltered": 2,
        "ConstraintFiltered": {"${meta.chutes_gpu_model} set_contains_any l40s": 2},
        "DimensionExhausted": {"devices: no devices match request": 1},
        "CoalescedFailures": 2,
    }
    assert explain_metric(metric) == (
        "0 of 3 nodes (3 allocations): 2 filtered by ${meta.chutes_gpu_model} set_contains_any l40s, "
        "1 exhausted (devices: no devices match request)"
    )
    assert "no node is ready" in explain_metric({"NodesEvaluated": 0})


async def test_dispatch_is_idempotent_per_token(client: NomadClient) -> None:
    m = manifest("batchy", ["h100_sxm"], jobs=[JobSpec(name="train")])
    job = render_batch_job(m, "train", ChuteRelease(SHA), settings())
    await register(client, job)
    one = await client.dispatch_job(job["ID"], b'{"x": 1}', meta={"run_id": "r1"}, idempotency_token="r1")
    again = await client.dispatch_job(job["ID"], b'{"x": 1}', meta={"run_id": "r1"}, idempotency_token="r1")
    other = await client.dispatch_job(job["ID"], b'{"x": 2}', meta={"run_id": "r2"}, idempotency_token="r2")
    assert one.dispatched_job_id.startswith(job["ID"] + "/dispatch-")
    assert again.dispatched_job_id == one.dispatched_job_id
    assert other.dispatched_job_id != one.dispatched_job_id
    child = await client.read_job(one.dispatched_job_id)
    assert child["Meta"]["run_id"] == "r1"
    with pytest.raises(NomadRejected, match="run_id"):
        await client.dispatch_job(job["ID"], b"{}", meta={})  # MetaRequired
    await client.deregister_job(job["ID"])


async def test_logs_whole_and_followed(client: NomadClient) -> None:
    job = chute_job("loggy", ["h100_sxm"])
    await register(client, job)

    async def running_alloc() -> str | None:
        allocs = await client.job_allocations(job["ID"])
        return next((a["ID"] for a in allocs if a["ClientStatus"] == "running"), None)

    alloc_id = await apoll_until(running_alloc, "running alloc", timeout=10.0)

    async def has_hello() -> bytes:
        data = b"".join([chunk async for chunk in client.stream_logs(alloc_id)])
        return data if b"hello from" in data else b""

    assert b"hello from" in await apoll_until(has_hello, "has hello", timeout=10.0)
    # Following: new lines keep arriving; stopping the iteration closes the stream.
    seen = b""
    stream = client.stream_logs(alloc_id, follow=True, origin="end", offset=0)
    async with asyncio.timeout(10):
        async for chunk in stream:
            seen += chunk
            if seen.count(b"tick") >= 3:
                break
    await stream.aclose()
    assert seen.count(b"tick") >= 3
    with pytest.raises(AllocationNotFound):
        async for _ in client.stream_logs("00000000-0000-0000-0000-000000000000"):
            pass
    await client.deregister_job(job["ID"])


async def test_errors_are_domain_exceptions(client: NomadClient) -> None:
    with pytest.raises(JobNotFound):
        await client.read_job("chute-missing")
    # As Nomad 1.4.6+: deleting a job that is gone is a no-op, 200 without an evaluation.
    assert await client.deregister_job("chute-missing") is None
    with pytest.raises(AllocationNotFound):
        await client.read_allocation("00000000-0000-0000-0000-000000000000")
    with pytest.raises(NomadRejected) as rejected:
        await client.register_job({"ID": "broken", "Typo": 1})
    assert rejected.value.status == 400 and rejected.value.detail


async def test_unreachable_nomad_is_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with NomadClient(f"http://127.0.0.1:{port}", timeout_s=2) as c:
        with pytest.raises(NomadUnavailable) as err:
            await c.list_jobs()
        assert "NOMAD_ADDR" in err.value.hint
        with pytest.raises(NomadUnavailable):
            async for _ in c.stream_logs("x"):
                pass


async def test_acl_token_is_sent_and_refusal_is_forbidden() -> None:
    with devcluster(nodes=["gpu-z=l4:1"], local_node=False, nomad_token="s3cret") as secured:
        async with NomadClient(secured.nomad_addr, timeout_s=5) as anonymous:
            with pytest.raises(NomadForbidden) as err:
                await anonymous.list_jobs()
            assert "NOMAD_TOKEN" in err.value.hint
        async with NomadClient(secured.nomad_addr, token="s3cret", timeout_s=5) as authorised:
            assert await authorised.list_jobs() == []
            assert [n["Name"] for n in await authorised.list_nodes()] == ["gpu-z"]


async def test_closed_client_refuses_calls(dc: DevclusterHandle) -> None:
    c = NomadClient(dc.nomad_addr)
    await c.close()
    with pytest.raises(NomadUnavailable, match="closed"):
        await c.list_jobs()
