"""Node drain and eligibility through python-nomad: allocations migrate one at a time, health-gated."""

from __future__ import annotations

import time
from typing import Any

import nomad.api.exceptions
import pytest

from tests.devcluster.jobspecs import MS, S, gpu_service_job
from tests.support.devcluster import DevclusterHandle
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(90)


def _live(n: Any, job_id: str) -> list[dict[str, Any]]:
    return [a for a in n.job.get_allocations(job_id) if a["DesiredStatus"] == "run" and a["ClientStatus"] == "running"]


def test_draining_a_node_moves_its_allocations_one_at_a_time_and_leaves_it_ineligible(
    fresh_dc: DevclusterHandle,
) -> None:
    n, c = fresh_dc.nomad(), fresh_dc.consul()
    job = gpu_service_job("drained", count=2, gpus=1, min_vram="20 GiB")
    job["Constraints"] = [{"LTarget": "${node.unique.name}", "Operand": "regexp", "RTarget": "^gpu-(b|c)$"}]
    job["TaskGroups"][0]["Migrate"] = {"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 500 * MS,
                                       "HealthyDeadline": 20 * S}  # fmt: skip
    n.jobs.register_job({"Job": job})
    poll_until(lambda: len(c.health.service("drained", passing=True)[1]) == 2, "two passing instances")
    [source] = {a["NodeName"] for a in _live(n, "drained")}
    target = "gpu-c" if source == "gpu-b" else "gpu-b"
    node_id = next(x["ID"] for x in n.nodes.get_nodes() if x["Name"] == source)

    reply = n.node.drain_node_with_spec(node_id, {"Deadline": 60 * S, "IgnoreSystemJobs": False})
    assert reply["NodeModifyIndex"] > 0
    node = n.node.get_node(node_id)
    assert node["SchedulingEligibility"] == "ineligible" and node["DrainStrategy"]["Deadline"] == 60 * S
    assert node["LastDrain"]["Status"] == "draining"
    assert next(x for x in n.nodes.get_nodes() if x["ID"] == node_id)["Drain"] is True
    with pytest.raises(nomad.api.exceptions.BaseNomadException) as err:
        n.node.eligible_node(node_id, eligible=True)
    assert "while it is draining" in err.value.nomad_resp.text
    # While it drains, an instance passes its checks at every moment, and only one moves at a time.
    deadline = time.monotonic() + 40
    while n.node.get_node(node_id)["DrainStrategy"] is not None:
        assert time.monotonic() < deadline, "the drain did not complete"
        assert c.health.service("drained", passing=True)[1], "an instance serves throughout"
        time.sleep(0.05)
    allocs = n.job.get_allocations("drained")
    assert sum(1 for a in allocs if a["DesiredTransition"]["Migrate"]) == 2
    first, second = sorted(a["CreateTime"] for a in allocs if a["NodeName"] == target)
    assert second - first >= 500 * MS, "the second moved once the first replacement was healthy for 500 ms"
    live = _live(n, "drained")
    assert len(live) == 2 and {a["NodeName"] for a in live} == {target}
    node = n.node.get_node(node_id)
    assert node["LastDrain"]["Status"] == "complete" and node["SchedulingEligibility"] == "ineligible"
    assert any(e["Message"] == "Node drain complete" for e in node["Events"])
    # Eligible again: new work may land there.
    n.node.eligible_node(node_id, eligible=True)
    assert n.node.get_node(node_id)["SchedulingEligibility"] == "eligible"
    n.job.deregister_job("drained", purge=True)


def test_an_ineligible_node_gets_no_new_work_and_a_blocked_eval_runs_when_it_is_eligible(
    fresh_dc: DevclusterHandle,
) -> None:
    n = fresh_dc.nomad()
    node_id = next(x["ID"] for x in n.nodes.get_nodes() if x["Name"] == "gpu-c")
    n.node.eligible_node(node_id, ineligible=True)
    job = gpu_service_job("pinned", count=1, gpus=1, min_vram="20 GiB")
    job["Constraints"] = [{"LTarget": "${node.unique.name}", "Operand": "=", "RTarget": "gpu-c"}]
    result = n.jobs.register_job({"Job": job})
    evaluation = poll_until(
        lambda: (e := n.evaluation.get_evaluation(result["EvalID"]))["Status"] != "pending" and e, "the eval"
    )
    assert evaluation["BlockedEval"] and not n.job.get_allocations("pinned")
    n.node.eligible_node(node_id, eligible=True)
    [alloc] = poll_until(lambda: n.job.get_allocations("pinned"), "placement once eligible")
    assert alloc["NodeName"] == "gpu-c"
    with pytest.raises(nomad.api.exceptions.BaseNomadException):
        n.node.drain_node_with_spec("00000000-0000-0000-0000-000000000000", {"Deadline": 0})
    n.job.deregister_job("pinned", purge=True)
