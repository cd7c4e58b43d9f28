"""Deployments through python-nomad: a rolling, health-gated update, scaling blocked while it runs, failure."""

from __future__ import annotations

from typing import Any

import nomad.api.exceptions
import pytest

from tests.devcluster.jobspecs import MS, S, gpu_service_job
from tests.support.devcluster import DevclusterHandle
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(90)

UPDATE = {"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 300 * MS, "HealthyDeadline": 10 * S,
          "ProgressDeadline": 20 * S, "AutoRevert": False}  # fmt: skip


def _job(job_id: str, version: str, count: int = 2, **update: Any) -> dict[str, Any]:
    job = gpu_service_job(job_id, count=count, gpus=1, min_vram="20 GiB")
    job["Constraints"] = [{"LTarget": "${node.unique.name}", "Operand": "=", "RTarget": "gpu-a"}]
    job["Meta"]["version"] = version
    job["Update"] = {**UPDATE, **update}
    return job


def _scale(n: Any, job_id: str, count: int) -> None:
    n.job.request(job_id, "scale", json={"Count": count, "Target": {"Group": "instance"}}, method="post")


def _live(n: Any, job_id: str) -> list[dict[str, Any]]:
    return [a for a in n.job.get_allocations(job_id) if a["DesiredStatus"] == "run" and a["ClientStatus"] != "failed"]


def _deployment_done(n: Any, job_id: str) -> dict[str, Any] | None:
    deployment: dict[str, Any] | None = n.job.get_deployment(job_id)
    return deployment if deployment and deployment["Status"] not in ("running", "paused") else None


def test_a_change_rolls_out_one_allocation_at_a_time_after_each_is_healthy(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    n.jobs.register_job({"Job": _job("rolling", "1")})
    first = poll_until(lambda: _deployment_done(n, "rolling"), "the first deployment", timeout=30)
    assert first["Status"] == "successful" and first["StatusDescription"] == "Deployment completed successfully"
    assert (
        first["TaskGroups"]["instance"]["HealthyAllocs"] == 2 and first["TaskGroups"]["instance"]["DesiredTotal"] == 2
    )
    assert n.job.get_job("rolling")["Stable"] is True
    v1 = {a["ID"] for a in _live(n, "rolling")}

    n.jobs.register_job({"Job": _job("rolling", "2")})
    deployment = poll_until(
        lambda: (d := n.job.get_deployment("rolling")) and d["JobVersion"] == 1 and d, "the second deployment"
    )
    assert deployment["Status"] == "running" and deployment["StatusDescription"] == "Deployment is running"
    # Scaling is refused while the deployment is active. Asked once, now that it has just started (two
    # allocations, each healthy for MinHealthyTime, are seconds away): asked near its end, the deployment could
    # finish between the status read and the call, and the scale would rightly go through.
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException) as err:
        _scale(n, "rolling", 3)
    assert "job scaling blocked due to active deployment" in err.value.nomad_resp.text
    # While it runs: never more than one allocation of the new version that is not yet healthy, and at least
    # one of the old version still running until a new one is healthy.
    seen_mixed = False
    while True:
        live = _live(n, "rolling")
        new = [a for a in live if a["JobVersion"] == 1]
        old = [a for a in live if a["JobVersion"] == 0]
        unproven = [a for a in new if (a["DeploymentStatus"] or {}).get("Healthy") is not True]
        assert len(unproven) <= 1, live
        assert old or any((a["DeploymentStatus"] or {}).get("Healthy") for a in new), live
        seen_mixed = seen_mixed or (bool(old) and bool(new))
        if _deployment_done(n, "rolling"):
            break
    assert seen_mixed, "the update went one allocation at a time"
    done = n.deployment.get_deployment(deployment["ID"])
    assert done["Status"] == "successful" and done["TaskGroups"]["instance"]["HealthyAllocs"] == 2
    live = _live(n, "rolling")
    assert len(live) == 2 and not {a["ID"] for a in live} & v1
    assert all(a["DeploymentStatus"]["Healthy"] is True for a in live)
    assert {a["ID"] for a in n.deployment.get_deployment_allocations(deployment["ID"])} >= {a["ID"] for a in live}
    assert [d["JobVersion"] for d in n.job.get_deployments("rolling")] == [1, 0]
    # Once it is done, scaling works again.
    _scale(n, "rolling", 1)
    poll_until(lambda: len(_live(n, "rolling")) == 1, "the scale down")
    n.job.deregister_job("rolling", purge=True)


def test_an_unhealthy_allocation_fails_the_deployment_and_the_old_version_keeps_serving(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    n.jobs.register_job({"Job": _job("failing", "1", ProgressDeadline=0)})
    poll_until(lambda: _deployment_done(n, "failing"), "the first deployment", timeout=30)
    # A check that never passes: its HealthyDeadline (10 s) passes and, with ProgressDeadline 0, fails it.
    broken = _job("failing", "2", ProgressDeadline=0)
    broken["TaskGroups"][0]["Services"][0]["Checks"][0]["Path"] = "/missing-page"
    n.jobs.register_job({"Job": broken})
    failed = poll_until(
        lambda: (d := _deployment_done(n, "failing")) and d["JobVersion"] == 1 and d, "failure", timeout=30
    )
    assert failed["Status"] == "failed" and failed["StatusDescription"] == "Failed due to unhealthy allocations"
    live = _live(n, "failing")
    assert [a["JobVersion"] for a in live].count(0) == 1, "the other old allocation keeps serving"
    [new] = [a for a in live if a["JobVersion"] == 1]
    assert new["DeploymentStatus"]["Healthy"] is False
    with pytest.raises(nomad.api.exceptions.BaseNomadException):
        n.deployment.fail_deployment(failed["ID"])
    n.job.deregister_job("failing", purge=True)


def test_pause_resume_and_fail_by_hand(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    n.jobs.register_job({"Job": _job("manual", "1", MinHealthyTime=5 * S, HealthyDeadline=15 * S)})
    deployment = poll_until(lambda: n.job.get_deployment("manual"), "a deployment")
    paused = n.deployment.pause_deployment(deployment["ID"], True)
    assert paused["EvalID"]
    assert n.deployment.get_deployment(deployment["ID"])["Status"] == "paused"
    n.deployment.pause_deployment(deployment["ID"], False)
    assert n.deployment.get_deployment(deployment["ID"])["StatusDescription"] == "Deployment is running"
    n.deployment.fail_deployment(deployment["ID"])
    failed = n.deployment.get_deployment(deployment["ID"])
    assert (failed["Status"], failed["StatusDescription"]) == ("failed", "Deployment marked as failed")
    # Scaling works once no deployment is active.
    _scale(n, "manual", 1)
    with pytest.raises(nomad.api.exceptions.URLNotFoundNomadException):
        n.deployment.get_deployment("00000000-0000-0000-0000-000000000000")
    assert n.job.get_deployment("no-such-job") is None
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException) as err:
        n.jobs.register_job({"Job": _job("invalid-update", "1", MinHealthyTime=20 * S, HealthyDeadline=10 * S)})
    assert "Minimum healthy time must be less than healthy deadline" in err.value.nomad_resp.text
    n.job.deregister_job("manual", purge=True)
