"""Nomad endpoints with python-nomad: validation, blocking queries, dispatch, logs, placement reasons, node meta."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import httpx
import nomad.api.exceptions
import pytest

from tests.devcluster.jobspecs import MS, S, gpu_service_job, python_task
from tests.support.devcluster import DevclusterHandle
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(60)


def _batch(job_id: str, code: str, **task: object) -> dict:
    return {
        "ID": job_id,
        "Type": "batch",
        "TaskGroups": [{"Name": "run", "Count": 1, "Tasks": [python_task("main", code, **task)]}],
    }


def test_unknown_fields_are_rejected_with_the_field_named(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    job = gpu_service_job("typo")
    job["TaskGroups"][0]["Tasks"][0]["Drvier"] = "raw_exec"
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException) as err:
        n.jobs.register_job({"Job": job})
    assert "TaskGroups.0.Tasks.0.Drvier: unknown field" in err.value.nomad_resp.text
    resp = httpx.post(
        f"{dc.nomad_addr}/v1/jobs", json={"Job": {"ID": "x", "TaskGroups": [{"Name": "g", "Count": "many"}]}}
    )
    assert resp.status_code == 400 and "Count" in resp.json()["detail"]
    resp = httpx.post(f"{dc.nomad_addr}/v1/jobs", json={"Job": {"ID": "x", "TaskGroups": []}})
    assert resp.status_code == 400 and "Missing job task groups" in resp.json()["detail"]


def test_parse_answers_501_with_a_hint(dc: DevclusterHandle) -> None:
    resp = httpx.post(f"{dc.nomad_addr}/v1/jobs/parse", json={"JobHCL": 'job "x" {}', "Canonicalize": True})
    assert resp.status_code == 501
    assert "HCL" in resp.json()["detail"] and resp.json()["hint"]


def test_deleting_a_job_that_is_gone_is_200_without_an_evaluation(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    result = n.job.deregister_job("never-registered", purge=True)
    assert result["EvalID"] == "" and result["EvalCreateIndex"] == 0 and result["JobModifyIndex"] == 0
    with pytest.raises(nomad.api.exceptions.URLNotFoundNomadException):
        n.job.get_job("never-registered")


def test_evaluations_are_processed_after_the_register_reply(dc: DevclusterHandle) -> None:
    """The reply names a pending evaluation; a worker completes it (and places) moments later."""
    n = dc.nomad()
    started = time.perf_counter()
    result = n.jobs.register_job({"Job": _batch("async-eval", "import time; time.sleep(30)")})
    created = result["EvalCreateIndex"]
    # Blocking on the evaluation past its creation index returns once the worker has processed it.
    resp = httpx.get(f"{dc.nomad_addr}/v1/evaluation/{result['EvalID']}", params={"index": created, "wait": "5s"})
    evaluation = resp.json()
    assert evaluation["CreateIndex"] == created < evaluation["ModifyIndex"]
    assert evaluation["Status"] == "complete" and evaluation["TriggeredBy"] == "job-register"
    [alloc] = n.job.get_allocations("async-eval")
    assert alloc["EvalID"] == result["EvalID"] and alloc["CreateIndex"] > created
    assert time.perf_counter() - started < 2, "placement stays fast"
    n.job.deregister_job("async-eval", purge=True)


def test_register_returns_indexes_and_enforce_index_guards_updates(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    job = _batch("enforced", "print('hi')")
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException):
        n.jobs.register_job({"Job": job, "EnforceIndex": True, "JobModifyIndex": 5})
    first = n.jobs.register_job({"Job": job, "EnforceIndex": True, "JobModifyIndex": 0})
    assert first["EvalID"] and first["JobModifyIndex"] > 0
    stored = n.job.get_job("enforced")
    assert stored["Version"] == 0 and stored["Priority"] == 50 and stored["Namespace"] == "default"
    assert stored["TaskGroups"][0]["Tasks"][0]["KillTimeout"] == 5 * S, "durations are nanoseconds"
    job["Meta"] = {"v": "2"}
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException):
        n.jobs.register_job({"Job": job, "EnforceIndex": True, "JobModifyIndex": first["JobModifyIndex"] - 1})
    second = n.job.register_job(
        "enforced", {"Job": job, "EnforceIndex": True, "JobModifyIndex": first["JobModifyIndex"]}
    )
    assert second["JobModifyIndex"] > first["JobModifyIndex"]
    assert n.job.get_job("enforced")["Version"] == 1
    assert "enforced" in [j["ID"] for j in n.jobs.get_jobs()]
    n.job.deregister_job("enforced", purge=True)


def test_blocking_query_on_job_allocations(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    n.jobs.register_job({"Job": _batch("blocker-0", "print(0)")})
    first = httpx.get(f"{dc.nomad_addr}/v1/job/blocker/allocations")
    index = int(first.headers["X-Nomad-Index"])
    started = time.monotonic()
    idle = httpx.get(f"{dc.nomad_addr}/v1/job/blocker/allocations", params={"index": index, "wait": "300ms"})
    assert time.monotonic() - started >= 0.25 and idle.json() == []

    def register_later() -> None:
        time.sleep(0.3)
        dc.nomad().jobs.register_job({"Job": _batch("blocker", "import time; time.sleep(5)")})

    threading.Thread(target=register_later).start()
    started = time.monotonic()
    woke = httpx.get(f"{dc.nomad_addr}/v1/job/blocker/allocations", params={"index": index, "wait": "10s"}, timeout=15)
    assert time.monotonic() - started < 5
    assert int(woke.headers["X-Nomad-Index"]) > index and len(woke.json()) == 1
    n.job.deregister_job("blocker", purge=True)
    n.job.deregister_job("blocker-0", purge=True)


def test_dispatch_writes_the_payload_and_meta_for_the_task(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    code = (
        "import os, pathlib\n"
        "data = pathlib.Path(os.environ['NOMAD_TASK_DIR'], 'payload.json').read_text()\n"
        "print('PAYLOAD=' + data + ' RUN=' + os.environ['NOMAD_META_run_id'] + ' JOB=' + os.environ['NOMAD_JOB_ID'])\n"
    )
    job = _batch("runner", code, DispatchPayload={"File": "payload.json"})
    job["ParameterizedJob"] = {"Payload": "required", "MetaRequired": ["run_id"]}
    registered = n.jobs.register_job({"Job": job})
    assert registered["EvalID"] == "", "a parameterized job is not evaluated until dispatched"
    assert n.job.get_job("runner")["Status"] == "running"
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException):
        n.job.dispatch_job("runner", meta={"run_id": "r1"})  # payload required
    payload = base64.b64encode(b'{"x": 1}').decode()
    out = n.job.dispatch_job("runner", payload=payload, meta={"run_id": "r1"}, idempotency_token="tok-1")
    child = out["DispatchedJobID"]
    assert child.startswith("runner/dispatch-") and out["EvalID"]
    again = n.job.dispatch_job("runner", payload=payload, meta={"run_id": "r1"}, idempotency_token="tok-1")
    assert again["DispatchedJobID"] == child, "the idempotency token prevents a second dispatch"
    poll_until(lambda: n.job.get_job(child)["Status"] == "dead", "the dispatched run to finish")
    [alloc] = n.job.get_allocations(child)
    assert alloc["ClientStatus"] == "complete"
    text = n.client.stream_logs.stream(alloc["ID"], "main", "stdout", plain=True)
    assert 'PAYLOAD={"x": 1} RUN=r1 JOB=' + child in text
    assert n.job.get_summary("runner")["Children"]["Dead"] == 1
    n.job.deregister_job("runner", purge=True)


def test_logs_follow_streams_until_the_task_ends(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    code = (
        "import sys, time\n"
        "for i in range(3):\n    print('line', i, flush=True); time.sleep(0.2)\n"
        "print('err', file=sys.stderr)"
    )
    n.jobs.register_job({"Job": _batch("talker", code)})
    [alloc] = poll_until(lambda: n.job.get_allocations("talker"), "an allocation")
    poll_until(
        lambda: n.allocation.get_allocation(alloc["ID"])["TaskStates"]["main"]["State"] != "pending", "the task started"
    )
    params = {"task": "main", "type": "stdout", "follow": "true", "plain": "true"}
    with httpx.stream("GET", f"{dc.nomad_addr}/v1/client/fs/logs/{alloc['ID']}", params=params, timeout=10) as r:
        body = b"".join(r.iter_bytes()).decode()
    assert body.splitlines() == ["line 0", "line 1", "line 2"]
    framed = httpx.get(
        f"{dc.nomad_addr}/v1/client/fs/logs/{alloc['ID']}", params={"task": "main", "type": "stderr"}
    ).json()
    assert base64.b64decode(framed["Data"]) == b"err\n" and framed["File"] == "alloc/logs/main.stderr.0"
    tail = httpx.get(
        f"{dc.nomad_addr}/v1/client/fs/logs/{alloc['ID']}",
        params={"task": "main", "type": "stdout", "plain": "true", "origin": "end", "offset": "7"},
    )
    assert tail.text == "line 2\n"
    bad = httpx.get(f"{dc.nomad_addr}/v1/client/fs/logs/{alloc['ID']}", params={"task": "main", "type": "x"})
    assert bad.status_code == 400
    n.job.deregister_job("talker", purge=True)


def test_job_run_output_json_of_a_docker_job_registers(dc: DevclusterHandle) -> None:
    """What ``nomad job run -output`` prints for a current docker job: NodePool, identity, actions, nulls."""
    body = json.loads((Path(__file__).parent / "data" / "job_run_output_docker.json").read_text())
    n = dc.nomad()
    result = n.jobs.register_job(body)
    assert result["EvalID"]
    stored = n.job.get_job("web-output")
    assert stored["NodePool"] == "default" and stored["UI"]["Links"][0]["Label"] == "docs"
    [task] = stored["TaskGroups"][0]["Tasks"]
    assert task["Identity"]["Env"] is True and task["Actions"][0]["Name"] == "hello"
    assert [s["Provider"] for s in stored["TaskGroups"][0]["Services"]] == ["consul", "nomad"]
    # This devcluster runs raw_exec only: everything else about the job is accepted, the driver filters it.
    evaluation = poll_until(lambda: _finished(n, result["EvalID"]), "the evaluation")
    assert evaluation["FailedTGAllocs"]["web"]["ConstraintFiltered"] == {"missing drivers": 4}
    body["Job"]["NodePool"] = "gpu-hosts"
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException) as err:
        n.jobs.register_job(body)
    assert err.value.nomad_resp.json()["detail"] == 'job "web-output" is in nonexistent node pool "gpu-hosts"'
    body["Job"]["TaskGroups"][0]["Services"][1]["Provider"] = "etcd"
    body["Job"]["NodePool"] = "all"
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException) as err:
        n.jobs.register_job(body)
    assert "invalid provider" in err.value.nomad_resp.text
    n.job.deregister_job("web-output", purge=True)


def _finished(n: object, eval_id: str) -> dict | None:
    evaluation: dict = n.evaluation.get_evaluation(eval_id)  # type: ignore[attr-defined]
    return evaluation if evaluation["Status"] != "pending" else None


def test_other_drivers_fail_placement_with_missing_drivers(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    job = {"ID": "dockerized", "TaskGroups": [{"Name": "g", "Tasks": [
        {"Name": "t", "Driver": "docker", "Config": {"image": "busybox"}}]}]}  # fmt: skip
    result = n.jobs.register_job({"Job": job})
    failed = n.evaluation.get_evaluation(result["EvalID"])["FailedTGAllocs"]["g"]
    assert failed["ConstraintFiltered"] == {"missing drivers": 4}
    n.job.deregister_job("dockerized", purge=True)


def test_node_meta_constraint_blocks_then_places_when_meta_appears(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    nodes = {x["Name"]: x for x in n.nodes.get_nodes()}
    assert set(nodes) >= {"gpu-a", "gpu-b", "gpu-c"}
    full = n.node.get_node(nodes["gpu-b"]["ID"])
    [group] = full["NodeResources"]["Devices"]
    assert (group["Vendor"], group["Type"], group["Name"]) == ("nvidia", "gpu", "NVIDIA A10")
    assert group["Attributes"]["memory"] == {"Int": 23028, "Unit": "MiB"}
    assert not any(k.startswith("chutes_") for k in full["Meta"])

    job = gpu_service_job("meta-bound", gpus=1, min_vram="20 GiB")
    job["Constraints"] = [{"LTarget": "${meta.chutes_gpu_model}", "Operand": "set_contains_any", "RTarget": "a10,l4"}]
    result = n.jobs.register_job({"Job": job})
    evaluation = n.evaluation.get_evaluation(result["EvalID"])
    key = "${meta.chutes_gpu_model} set_contains_any a10,l4"
    assert evaluation["FailedTGAllocs"]["instance"]["ConstraintFiltered"] == {key: 4}
    # The agent publishes dynamic node meta (NodeID in the body, as Nomad accepts it): the blocked eval runs.
    resp = httpx.post(
        f"{dc.nomad_addr}/v1/client/metadata",
        json={"NodeID": nodes["gpu-b"]["ID"], "Meta": {"chutes_gpu_model": "a10", "chutes_gpu_count": "2"}},
    )
    assert resp.json()["Dynamic"] == {"chutes_gpu_model": "a10", "chutes_gpu_count": "2"}
    [alloc] = poll_until(lambda: n.job.get_allocations("meta-bound"), "placement after meta appeared")
    assert alloc["NodeName"] == "gpu-b"
    assert n.evaluation.get_evaluation(evaluation["BlockedEval"])["Status"] == "complete"
    assert n.node.get_node(nodes["gpu-b"]["ID"])["Meta"]["chutes_gpu_model"] == "a10"
    httpx.post(f"{dc.nomad_addr}/v1/client/metadata", json={"NodeID": nodes["gpu-b"]["ID"],
               "Meta": {"chutes_gpu_model": None, "chutes_gpu_count": None}})  # fmt: skip
    n.job.deregister_job("meta-bound", purge=True)


def test_blocked_eval_is_retried_when_gpus_free_up(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    # gpu-c has two L40S: the first job takes both, the second waits for them.
    first = gpu_service_job("l40s-1", gpus=2)
    first["Constraints"] = [{"LTarget": "${node.unique.name}", "Operand": "=", "RTarget": "gpu-c"}]
    second = gpu_service_job("l40s-2", gpus=2)
    second["Constraints"] = first["Constraints"]
    n.jobs.register_job({"Job": first})
    result = n.jobs.register_job({"Job": second})
    metric = n.evaluation.get_evaluation(result["EvalID"])["FailedTGAllocs"]["instance"]
    assert metric["DimensionExhausted"] == {"devices: no devices match request": 1}
    assert metric["NodesExhausted"] == 1
    assert metric["ConstraintFiltered"] == {"${node.unique.name} = gpu-c": 3}
    n.job.deregister_job("l40s-1")
    [alloc] = poll_until(lambda: n.job.get_allocations("l40s-2"), "the blocked job to be placed")
    assert alloc["NodeName"] == "gpu-c"
    n.job.deregister_job("l40s-1", purge=True)
    n.job.deregister_job("l40s-2", purge=True)


def test_distinct_hosts_and_affinity(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    job = gpu_service_job("spread-out", count=3, gpus=1, min_vram="20 GiB")
    job["TaskGroups"][0]["Constraints"] = [{"Operand": "distinct_hosts", "RTarget": "true"}]
    job["Affinities"] = [{"LTarget": "${node.unique.name}", "Operand": "=", "RTarget": "gpu-b", "Weight": 100}]
    result = n.jobs.register_job({"Job": job})
    assert not n.evaluation.get_evaluation(result["EvalID"])["FailedTGAllocs"]
    allocs = n.job.get_allocations("spread-out")
    assert sorted(a["NodeName"] for a in allocs) == ["gpu-a", "gpu-b", "gpu-c"]
    assert next(a for a in allocs if a["Name"] == "spread-out.instance[0]")["NodeName"] == "gpu-b", "affinity first"
    n.job.request("spread-out", "scale", json={"Count": 4, "Target": {"Group": "instance"}}, method="post")
    failed = n.job.get_evaluations("spread-out")[-2]["FailedTGAllocs"]["instance"]
    assert failed["ConstraintFiltered"]["distinct_hosts"] == 3
    n.job.deregister_job("spread-out", purge=True)


def test_scale_respects_the_scaling_policy_and_reports_status(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    job = _batch("scaled", "import time; time.sleep(30)")
    job["Type"] = "service"
    job["TaskGroups"][0]["Scaling"] = {"Min": 0, "Max": 2, "Enabled": True}
    n.jobs.register_job({"Job": job})
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException) as err:
        n.job.request("scaled", "scale", json={"Count": 3, "Target": {"Group": "run"}}, method="post")
    assert "maximum" in err.value.nomad_resp.text
    resp = n.job.request(
        "scaled", "scale", json={"Count": 2, "Target": {"Group": "run"}, "Message": "up"}, method="put"
    )
    assert resp.status_code == 200
    status = n.job.request("scaled", "scale", method="get").json()
    assert status["TaskGroups"]["run"]["Desired"] == 2
    assert status["TaskGroups"]["run"]["Events"][0]["Message"] == "up"
    poll_until(
        lambda: n.job.request("scaled", "scale", method="get").json()["TaskGroups"]["run"]["Running"] == 2,
        "two running",
    )
    n.job.request("scaled", "scale", json={"Count": 0, "Target": {"Group": "run"}}, method="post")
    poll_until(
        lambda: all(a["ClientStatus"] == "complete" for a in n.job.get_allocations("scaled")),
        "every allocation complete",
    )
    n.job.deregister_job("scaled", purge=True)


def test_restart_policy_then_failure_and_task_events(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    job = _batch("crasher", "import sys; print('boom'); sys.exit(3)")
    job["TaskGroups"][0]["RestartPolicy"] = {"Attempts": 2, "Interval": 60 * S, "Delay": 50 * MS, "Mode": "fail"}
    job["TaskGroups"][0]["ReschedulePolicy"] = {"Attempts": 0, "Unlimited": False}
    n.jobs.register_job({"Job": job})
    poll_until(
        lambda: n.job.get_allocations("crasher") and n.job.get_allocations("crasher")[0]["ClientStatus"] == "failed",
        "the allocation failed",
    )
    [alloc] = n.job.get_allocations("crasher")
    state = n.allocation.get_allocation(alloc["ID"])["TaskStates"]["main"]
    assert state["State"] == "dead" and state["Failed"] and state["Restarts"] == 2
    kinds = [e["Type"] for e in state["Events"]]
    assert kinds.count("Terminated") == 3 and kinds[-1] == "Not Restarting"
    assert next(e for e in state["Events"] if e["Type"] == "Terminated")["ExitCode"] == 3
    text = n.client.stream_logs.stream(alloc["ID"], "main", "stdout", plain=True)
    assert text == "boom\n" * 3
    n.job.deregister_job("crasher", purge=True)


def test_env_and_ports_of_a_task(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    code = (
        "import os\n"
        "for k in sorted(os.environ):\n"
        "    print(f'{k}={os.environ[k]}') if k.startswith(('NOMAD_', 'GREETING')) else None"
    )
    job = _batch("envy", code, Env={"GREETING": "port ${NOMAD_PORT_web} of ${NOMAD_JOB_ID}"}, Meta={"tier": "gold"})
    job["TaskGroups"][0]["Networks"] = [{"DynamicPorts": [{"Label": "web"}]}]
    n.jobs.register_job({"Job": job})
    poll_until(
        lambda: n.job.get_allocations("envy") and n.job.get_allocations("envy")[0]["ClientStatus"] == "complete",
        "the allocation complete",
    )
    [alloc] = n.job.get_allocations("envy")
    env = dict(
        line.split("=", 1)
        for line in n.client.stream_logs.stream(alloc["ID"], "main", "stdout", plain=True).splitlines()
    )
    full = n.allocation.get_allocation(alloc["ID"])
    port = full["AllocatedResources"]["Shared"]["Ports"][0]["Value"]
    assert env["NOMAD_PORT_web"] == str(port) and env["NOMAD_ADDR_web"] == f"127.0.0.1:{port}"
    assert env["GREETING"] == f"port {port} of envy"
    assert env["NOMAD_ALLOC_ID"] == alloc["ID"] and env["NOMAD_JOB_ID"] == "envy"
    assert env["NOMAD_TASK_NAME"] == "main" and env["NOMAD_META_tier"] == "gold"
    assert env["NOMAD_TASK_DIR"].endswith(f"{alloc['ID']}/main/local")
    assert env["NOMAD_ALLOC_DIR"].endswith(f"{alloc['ID']}/alloc")
    n.job.deregister_job("envy", purge=True)


def test_plan_is_a_dry_run_that_explains_placement(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    job = gpu_service_job("planned", count=2, gpus=8)
    plan = n.job.plan_job("planned", {"Job": job})
    assert plan["Annotations"]["DesiredTGUpdates"]["instance"]["Place"] == 1
    assert plan["FailedTGAllocs"]["instance"]["ConstraintFiltered"] == {"missing devices": 3}
    # The first allocation takes gpu-a's eight GPUs; the second finds gpu-a exhausted.
    assert plan["FailedTGAllocs"]["instance"]["DimensionExhausted"] == {"devices: no devices match request": 1}
    with pytest.raises(nomad.api.exceptions.URLNotFoundNomadException):
        n.job.get_job("planned")
    assert n.allocations.get_allocations(filter_='JobID == "planned"') == []


def test_failed_service_allocation_is_rescheduled_and_stop_places_a_replacement(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    job = _batch("flaky", "import sys, time; time.sleep(0.2); sys.exit(1)")
    job["Type"] = "service"
    job["TaskGroups"][0]["RestartPolicy"] = {"Attempts": 0, "Interval": 60 * S, "Delay": 0, "Mode": "fail"}
    job["TaskGroups"][0]["ReschedulePolicy"] = {"Delay": 100 * MS, "DelayFunction": "constant", "Unlimited": True}
    n.jobs.register_job({"Job": job})
    chained = poll_until(
        lambda: [a for a in n.job.get_allocations("flaky") if a["PreviousAllocation"]], "a rescheduled alloc"
    )
    previous = n.allocation.get_allocation(chained[0]["PreviousAllocation"])
    assert previous["ClientStatus"] == "failed" and previous["NextAllocation"] == chained[0]["ID"]
    assert chained[0]["Name"] == previous["Name"] == "flaky.run[0]"
    n.job.deregister_job("flaky", purge=True)

    steady = _batch("steady", "import time; time.sleep(60)")
    steady["Type"] = "service"
    n.jobs.register_job({"Job": steady})
    [first] = poll_until(lambda: n.job.get_allocations("steady"), "an allocation")
    n.allocation.stop_allocation(first["ID"])
    allocs = poll_until(
        lambda: len(n.job.get_allocations("steady")) == 2 and n.job.get_allocations("steady"), "two allocations"
    )
    by_id = {a["ID"]: a for a in allocs}
    assert by_id[first["ID"]]["DesiredStatus"] == "stop"
    assert [a["DesiredStatus"] for a in allocs if a["ID"] != first["ID"]] == ["run"]
    n.job.deregister_job("steady", purge=True)


def test_system_job_runs_one_allocation_per_feasible_node(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    job = _batch("per-node", "import time; time.sleep(60)")
    job["Type"] = "system"
    job["Constraints"] = [{"LTarget": "${node.unique.name}", "Operand": "regexp", "RTarget": "^gpu-"}]
    n.jobs.register_job({"Job": job})
    allocs = poll_until(
        lambda: len(n.job.get_allocations("per-node")) == 3 and n.job.get_allocations("per-node"),
        "one allocation per node",
    )
    assert sorted(a["NodeName"] for a in allocs) == ["gpu-a", "gpu-b", "gpu-c"]
    n.job.deregister_job("per-node", purge=True)
