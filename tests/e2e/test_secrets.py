"""Secrets on the whole dev stack (``chutes.dev.DevStack``: devcluster, agents, scheduler, gateway).

A chute whose cord answers ``len(os.environ["HF_TOKEN"])`` and its sha256: right after ``chutes secrets create``
a deploy answers with the right values, and the job Nomad holds carries neither the value nor the instance token
nor the invoke secret (they are in the job's Nomad Variable, read by its template). Rotating the secret with two
instances restarts them one at a time, in place, with no failed call; the answers show the new hash. A job
method (a dispatched batch job) gets its secrets the same way, and its run token too, which neither its job nor
the dispatch carries. No log, event, chute view or metric shows a value; deleting the chute deletes its variable
and its secrets.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nomad
import pytest

from chutes.client import ChutesAPIError, Client
from chutes.dev import DevStack
from chutes.dev.stack import StackInfo
from tests.e2e.secret_app import APP, RETRIED
from tests.support.polling import poll_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

BIN = Path(sys.executable).parent
FIRST = "hf_" + "first-token-value-" + "x" * 17
SECOND = "hf_second 'rotated' \"value\" with \\ and\nnewline"


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def cli(info: StackInfo, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_", "CONSUL_"))}
    env.update(CHUTES_SCHEDULER_URL=info.api_url, CHUTES_API_KEY=info.api_key, CHUTES_CONFIG="/nonexistent/config.ini")
    return subprocess.run(
        [str(BIN / "chutes"), *args], input=stdin, env=env, capture_output=True, text=True, timeout=60
    )


def ready_instances(client: Client, chute: str) -> int:
    return sum(1 for i in client.instances(chute) if i.get("healthy"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackInfo, Path]]:
    tmp = tmp_path_factory.mktemp("secrets")
    (tmp / "app.py").write_text(APP)
    with DevStack(data_dir=tmp / "data", use_local_gpus=False, echo=lambda _: None) as dev:
        yield dev.start(), tmp


def test_a_secret_reaches_the_chute_and_never_its_job_then_rotates_without_a_failed_call(
    stack: tuple[StackInfo, Path],
) -> None:
    info, tmp = stack
    created = cli(info, "secrets", "create", "HF_TOKEN", "--chute", "secret-echo", stdin=FIRST + "\n")
    assert created.returncode == 0, created.stderr
    assert "created" in created.stdout and "not deployed yet" in created.stdout
    listed = json.loads(cli(info, "secrets", "list", "--json").stdout)
    assert [(s["name"], s["chute_name"]) for s in listed] == [("HF_TOKEN", "secret-echo")]
    assert FIRST not in json.dumps(listed)

    n = nomad.Nomad(address=info.nomad_addr, token=info.nomad_token, timeout=10)
    with Client(info.api_url, info.api_key, gateway_url=info.gateway_url) as client:
        chute = client.deploy(f"{tmp / 'app.py'}:chute")
        poll_until(
            lambda: ready_instances(client, "secret-echo") == 1,
            "the first instance",
            timeout=90,
            interval=0.3,
            retry_on=RETRIED,
        )
        answer = client.invoke("secret-echo", "/token", {}).json()
        assert (answer["length"], answer["sha256"]) == (len(FIRST), digest(FIRST))

        # The registered job (from Nomad's API) holds no credential; its variable holds them all.
        job_id = f"chute-{chute['chute_id']}"
        variable = n.variable.get_variable(f"nomad/jobs/{job_id}")["Items"]
        credentials = [FIRST, variable["CHUTES_INVOKE_SECRET"]]
        credentials += [v for k, v in variable.items() if k.startswith("CHUTES_INSTANCE_TOKEN_")]
        assert variable["HF_TOKEN"] == FIRST and len(credentials) == 3 and all(len(c) >= 32 for c in credentials)
        job = n.job.get_job(job_id)
        allocations = [n.allocation.get_allocation(a["ID"]) for a in n.job.get_allocations(job_id)]
        for text in (json.dumps(job), json.dumps(allocations), json.dumps(n.job.get_versions(job_id))):
            assert not [c for c in credentials if c in text], "a credential in the job Nomad holds"
        assert job["TaskGroups"][0]["Tasks"][0]["Templates"][0]["ChangeMode"] == "restart"

        # Two instances; then rotate while a caller keeps calling: every call succeeds, both restart in place.
        client.scale_chute("secret-echo", 2)
        poll_until(
            lambda: ready_instances(client, "secret-echo") == 2,
            "two instances",
            timeout=90,
            interval=0.3,
            retry_on=RETRIED,
        )
        allocs_before = {a["ID"] for a in n.job.get_allocations(job_id) if a["ClientStatus"] == "running"}
        modify_index = n.job.get_job(job_id)["JobModifyIndex"]
        seen, failures, stop = [], [], threading.Event()

        def caller() -> None:
            with Client(info.api_url, info.api_key, gateway_url=info.gateway_url) as own:
                while not stop.is_set():
                    try:
                        result = own.invoke("secret-echo", "/token", {})
                        if result.status != 200:
                            failures.append(result.status)
                        else:
                            seen.append(result.json())
                    except ChutesAPIError as exc:
                        failures.append(str(exc))
                    time.sleep(0.02)

        thread = threading.Thread(target=caller)
        thread.start()
        try:
            time.sleep(1.0)
            rotated = client.create_secret("HF_TOKEN", SECOND, chute="secret-echo")
            assert rotated["created"] is False and rotated["applied"] is True

            def both_restarted() -> bool:
                allocs = [n.allocation.get_allocation(a) for a in allocs_before]
                return all(a["TaskStates"]["runtime"]["Restarts"] == 1 for a in allocs) and (
                    ready_instances(client, "secret-echo") == 2
                )

            poll_until(
                both_restarted, "both instances restarted and ready", timeout=120, interval=0.3, retry_on=RETRIED
            )
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join(30)
        assert not failures, failures[:5]
        new = [s for s in seen if s["sha256"] == digest(SECOND)]
        assert len({s["pid"] for s in new}) == 2, "both instances answer with the new value"
        assert all(s["length"] == len(SECOND) for s in new)
        assert seen[-1]["sha256"] == digest(SECOND)
        assert {a["ID"] for a in n.job.get_allocations(job_id) if a["ClientStatus"] == "running"} == allocs_before
        assert n.job.get_job(job_id)["JobModifyIndex"] == modify_index, "a rotation does not touch the job"

        # Nothing shows a value: logs of the platform, events, the chute's view, the gateway's metrics.
        shown = [json.dumps(client.get_chute("secret-echo")), json.dumps(list(client.events("secret-echo")))]
        shown.append(httpx.get(f"{info.gateway_url}/metrics", timeout=10).text)
        shown += [p.read_text(errors="replace") for p in Path(info.logs_dir).glob("*.log")]
        shown.append(cli(info, "chutes", "get", "secret-echo", "--json").stdout)
        secrets_now = [*credentials, SECOND]
        for text in shown:
            assert not [s for s in secrets_now if s in text]
        kinds = [e.get("type") for e in client.events("secret-echo")]
        assert "secrets" in kinds

        # A new name changes the template: the job is registered again (its Meta lists names, never values);
        # deleting it does the same.
        client.create_secret("API_KEY", "k-123", chute="secret-echo")
        job = n.job.get_job(job_id)
        assert job["Meta"]["chute_secrets"] == "API_KEY,HF_TOKEN" and job["JobModifyIndex"] > modify_index
        poll_until(
            lambda: client.invoke("secret-echo", "/token", {}).json()["api_key"] == 5,
            "API_KEY in the instance",
            timeout=90,
            interval=0.3,
            retry_on=RETRIED,
        )
        client.delete_secret("API_KEY", chute="secret-echo")
        assert n.job.get_job(job_id)["Meta"]["chute_secrets"] == "HF_TOKEN"
        assert "API_KEY" not in n.variable.get_variable(f"nomad/jobs/{job_id}")["Items"]
        poll_until(
            lambda: client.invoke("secret-echo", "/token", {}).json()["api_key"] == 0,
            "API_KEY gone",
            timeout=90,
            interval=0.3,
            retry_on=RETRIED,
        )

        # Deleting the chute deletes its variable and its secrets.
        client.delete_chute("secret-echo")
        with pytest.raises(nomad.api.exceptions.URLNotFoundNomadException):
            n.variable.get_variable(f"nomad/jobs/{job_id}")
        assert client.list_secrets("secret-echo") == []


def test_a_job_run_gets_its_secret_and_its_jobs_carry_none(stack: tuple[StackInfo, Path]) -> None:
    info, tmp = stack
    n = nomad.Nomad(address=info.nomad_addr, token=info.nomad_token, timeout=10)
    with Client(info.api_url, info.api_key) as client:
        client.create_secret("HF_TOKEN", FIRST, chute="secret-batch")
        chute = client.deploy(f"{tmp / 'app.py'}:batch")
        run = client.run_job("secret-batch", "check")
        done = poll_until(
            lambda: (r := client.get_job(run["run_id"]))["status"] in ("succeeded", "failed") and r,
            "the run to finish",
            timeout=120,
            interval=0.3,
            retry_on=RETRIED,
        )
        assert done["status"] == "succeeded", done
        assert (done["result"]["length"], done["result"]["sha256"]) == (len(FIRST), digest(FIRST))
        parent = f"chute-{chute['chute_id']}-job-check"
        items = n.variable.get_variable(f"nomad/jobs/{parent}")["Items"]
        credentials = [v for k, v in items.items() if k != "HF_TOKEN"] + [FIRST]
        # The run's token reached the run (through its template) and is in neither job nor dispatch.
        assert done["result"]["run_token"].startswith("cjt_"), done["result"]
        credentials.append(done["result"]["run_token"])
        children = [j for j in n.jobs.get_jobs(prefix=parent) if j.get("ParentID") == parent]
        assert children, "the run was a dispatched child job"
        for job_id in [parent, *(c["ID"] for c in children)]:
            text = json.dumps(n.job.get_job(job_id))
            assert not [c for c in credentials if c in text]
