"""The issue's must-show path, with python-nomad and py-consul (sync and asyncio) against a real devcluster."""

from __future__ import annotations

import asyncio

import consul.aio
import nomad.api.exceptions
import pytest

from chutes.core.inventory import simulated_gpus
from tests.devcluster.jobspecs import gpu_service_job
from tests.support.devcluster import DevclusterHandle
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(90)


def _running(n: object, job_id: str) -> list[dict]:
    allocs = n.job.get_allocations(job_id)  # type: ignore[attr-defined]
    return [a for a in allocs if a["ClientStatus"] == "running" and a["DesiredStatus"] == "run"]


def test_two_gpu_job_runs_on_a_fitting_node_sees_its_gpus_and_turns_passing(dc: DevclusterHandle) -> None:
    n, c = dc.nomad(), dc.consul()
    result = n.jobs.register_job({"Job": gpu_service_job("chute-one", gpus=2, min_vram="40 GiB")})
    evaluation = n.evaluation.get_evaluation(result["EvalID"])
    assert evaluation["Status"] == "complete" and not evaluation["FailedTGAllocs"]

    [stub] = poll_until(lambda: _running(n, "chute-one"), "a running allocation")
    alloc = n.allocation.get_allocation(stub["ID"])
    # gpu-b has 24 GB A10s: only gpu-a (H100, 80 GB) and gpu-c (L40S, 48 GB) fit ">= 40 GiB".
    assert alloc["NodeName"] in ("gpu-a", "gpu-c")
    [device] = alloc["AllocatedResources"]["Tasks"]["runtime"]["Devices"]
    assert (device["Vendor"], device["Type"]) == ("nvidia", "gpu") and len(device["DeviceIDs"]) == 2
    node_uuids = {
        g.uuid for g in simulated_gpus(alloc["NodeName"], "h100_sxm" if alloc["NodeName"] == "gpu-a" else "l40s", 8)
    }
    assert set(device["DeviceIDs"]) <= node_uuids

    # The process sees exactly its GPUs.
    log = poll_until(
        lambda: n.client.stream_logs.stream(alloc["ID"], "runtime", "stdout", plain=True), "the task's stdout"
    )
    assert f"GPUS={','.join(device['DeviceIDs'])}" in log

    # Its service turns passing in Consul only once the HTTP check has passed.
    def passing() -> list[dict]:
        return c.health.service("chute-one", passing=True)[1]

    [entry] = poll_until(passing, "a passing instance in Consul")
    port = next(p["Value"] for p in alloc["AllocatedResources"]["Shared"]["Ports"] if p["Label"] == "http")
    service = entry["Service"]
    assert service["ID"] == f"_nomad-task-{alloc['ID']}-group-instance-chute-one-http"
    assert (service["Address"], service["Port"]) == ("127.0.0.1", port)
    assert service["Tags"] == ["chutes", "user:alice"]
    assert service["Meta"]["chute"] == "chute-one" and service["Meta"]["external-source"] == "nomad"
    assert {ch["Status"] for ch in entry["Checks"]} == {"passing"}

    async def async_view() -> list[dict]:
        client = consul.aio.Consul(host="127.0.0.1", port=dc.consul_port)
        try:
            _, entries = await client.health.service("chute-one", passing=True)
            return entries
        finally:
            await client.close()

    assert [e["Service"]["ID"] for e in asyncio.run(async_view())] == [service["ID"]]

    # Scale to 2 (python-nomad has no scale method: the raw request, as the autoscaler does).
    resp = n.job.request("chute-one", "scale", json={"Count": 2, "Target": {"Group": "instance"}}, method="post")
    assert resp.json()["EvalID"]
    poll_until(lambda: len(_running(n, "chute-one")) == 2, "two running allocations")
    allocs = [n.allocation.get_allocation(a["ID"]) for a in _running(n, "chute-one")]
    ids = [i for a in allocs for i in a["AllocatedResources"]["Tasks"]["runtime"]["Devices"][0]["DeviceIDs"]]
    assert len(set(ids)) == 4, "two allocations never share a GPU"
    poll_until(lambda: len(passing()) == 2, "two passing instances")

    # Deregistering stops both and removes them from Consul.
    n.job.deregister_job("chute-one")
    poll_until(
        lambda: all(a["ClientStatus"] == "complete" for a in n.job.get_allocations("chute-one")),
        "both allocations complete",
    )
    assert c.health.service("chute-one")[1] == []
    assert n.job.get_job("chute-one")["Status"] == "dead"


def test_impossible_request_explains_itself_in_failed_tg_allocs(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    result = n.jobs.register_job({"Job": gpu_service_job("too-big", gpus=16, min_vram="40 GiB")})
    evaluation = n.evaluation.get_evaluation(result["EvalID"])
    metric = evaluation["FailedTGAllocs"]["instance"]
    assert metric["NodesEvaluated"] == 4  # three simulated nodes and the local one
    assert metric["ConstraintFiltered"] == {"missing devices": 4}
    assert evaluation["BlockedEval"]
    blocked = n.evaluation.get_evaluation(evaluation["BlockedEval"])
    assert blocked["Status"] == "blocked"
    assert n.job.get_summary("too-big")["Summary"]["instance"]["Queued"] == 1

    # A memory floor above every GPU is filtered on the device attribute, with units.
    result = n.jobs.register_job({"Job": gpu_service_job("too-hungry", gpus=1, min_vram="100 GiB")})
    metric = n.evaluation.get_evaluation(result["EvalID"])["FailedTGAllocs"]["instance"]
    assert metric["ConstraintFiltered"] == {"missing devices": 4}
    n.job.deregister_job("too-big", purge=True)
    n.job.deregister_job("too-hungry", purge=True)
    with pytest.raises(nomad.api.exceptions.URLNotFoundNomadException):
        n.job.get_job("too-big")
