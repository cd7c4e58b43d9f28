"""Nomad's event stream with python-nomad's streaming client and as raw ndjson."""

from __future__ import annotations

import json
import queue
import time
from typing import Any

import httpx
import pytest

from tests.devcluster.jobspecs import python_task
from tests.support.devcluster import DevclusterHandle

pytestmark = pytest.mark.timeout(60)


def _events(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for line in lines for e in line.get("Events") or []]


def test_the_stream_sends_the_events_of_the_topics_asked_for(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    start = int(httpx.get(f"{dc.nomad_addr}/v1/jobs").headers["X-Nomad-Index"])
    job = {"ID": "streamed", "Type": "batch",
           "TaskGroups": [{"Name": "run", "Tasks": [python_task("main", "print('hi')")]}]}  # fmt: skip
    n.jobs.register_job({"Job": job})
    lines: list[dict[str, Any]] = []
    params = [("index", str(start)), ("topic", "Allocation:streamed"), ("topic", "Job:streamed"),
              ("topic", "Evaluation:streamed")]  # fmt: skip
    deadline = time.monotonic() + 20
    with httpx.stream("GET", f"{dc.nomad_addr}/v1/event/stream", params=params, timeout=30) as resp:
        assert resp.status_code == 200
        for raw in resp.iter_lines():
            if raw.strip():
                lines.append(json.loads(raw))
            seen = _events(lines)
            done = any(e["Topic"] == "Allocation" and e["Payload"]["Allocation"]["ClientStatus"] == "complete"
                       for e in seen)  # fmt: skip
            if done or time.monotonic() > deadline:
                break
    seen = _events(lines)
    assert {e["Topic"] for e in seen} == {"Job", "Evaluation", "Allocation"}
    assert all(line["Index"] > start for line in lines if "Index" in line)
    assert [line["Index"] for line in lines] == sorted(line["Index"] for line in lines)
    job_event = next(e for e in seen if e["Topic"] == "Job")
    assert job_event["Type"] == "JobRegistered" and job_event["Key"] == "streamed"
    evaluation = next(e for e in seen if e["Topic"] == "Evaluation")
    assert evaluation["FilterKeys"] == ["streamed"] and evaluation["Payload"]["Evaluation"]["JobID"] == "streamed"
    allocs = [e for e in seen if e["Topic"] == "Allocation"]
    assert {e["Type"] for e in allocs} >= {"PlanResult", "AllocationUpdated"}
    assert all(e["Payload"]["Allocation"]["JobID"] == "streamed" for e in allocs)
    bad = httpx.get(f"{dc.nomad_addr}/v1/event/stream", params={"topic": "Nonsense"})
    assert bad.status_code == 400 and "invalid topic" in bad.json()["detail"]
    n.job.deregister_job("streamed", purge=True)


def test_python_nomads_stream_client_reads_it(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    thread, stop, events = n.event.stream.get_stream(topic={"Node": "*"}, index=0)
    thread.daemon = True  # it notices the stop only at the next line (a heartbeat at the latest)
    thread.start()
    try:
        node_id = n.nodes.get_nodes()[0]["ID"]
        httpx.post(f"{dc.nomad_addr}/v1/client/metadata", json={"NodeID": node_id, "Meta": {"streamed": "yes"}})
        found = None
        deadline = time.monotonic() + 15
        while found is None and time.monotonic() < deadline:
            try:
                batch = events.get(timeout=1)
            except queue.Empty:
                continue
            found = next((e for e in batch.get("Events") or [] if e["Key"] == node_id), None)
        assert found is not None and found["Topic"] == "Node"
        assert found["Payload"]["Node"]["ID"] == node_id
    finally:
        stop.set()
        httpx.post(f"{dc.nomad_addr}/v1/client/metadata", json={"NodeID": node_id, "Meta": {"streamed": None}})
