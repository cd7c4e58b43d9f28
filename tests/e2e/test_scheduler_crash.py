"""Killing the scheduler in the middle of a deploy: on restart it converges, with exactly one job."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from chutes.client import ChutesAPIError, Client
from tests.e2e.test_scheduler_deploy import assert_gone, chute_file
from tests.support.polling import poll_until
from tests.support.stack import http_json, scheduler_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _running_allocs(stack: Any, cid: str) -> list[dict[str, Any]]:
    allocs = stack.dc.nomad().allocations.get_allocations(filter_=f'JobID == "chute-{cid}"')
    return [a for a in allocs if a["ClientStatus"] in ("pending", "running")]


def test_kill_during_deploy_then_restart_converges_without_duplicates(tmp_path: Path) -> None:
    with scheduler_stack(tmp_path) as st:
        nomad = st.dc.nomad()
        # First life: the deploy pauses between storing its intent and registering the job; the reconciler
        # runs only at start-up, so nothing else registers it.
        first = st.scheduler("sched", CHUTES_DEPLOY_REGISTER_DELAY="60", CHUTES_RECONCILE_INTERVAL="600")
        first.start()
        first.wait_healthy()
        with Client(first.url, st.admin_key) as admin:
            key = str(admin.create_user("alice")["api_key"])
        ref = chute_file(tmp_path, "crashy", {"gpu_count": 1, "include": ["a100"]})
        outcome: dict[str, Any] = {}

        def deploy() -> None:
            try:
                with Client(first.url, key, timeout=120) as client:
                    outcome["answer"] = client.deploy(ref)
            except ChutesAPIError as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=deploy, daemon=True)
        thread.start()
        events = poll_until(
            lambda: http_json(f"{first.url}/v1/chutes/crashy/events", key), "the deploy's accepted event", 30
        )
        assert [e["type"] for e in events] == ["accepted"]
        cid = events[0]["chute_id"]
        assert nomad.jobs.get_jobs(prefix=f"chute-{cid}") == []
        first.kill()
        thread.join(30)
        assert "answer" not in outcome and outcome["error"].status == 0  # the connection died with the scheduler

        # Second life, same port and store: the reconciler registers the job and the instance comes up.
        second = st.scheduler("sched", port=first.port)
        second.start()
        second.wait_healthy()
        with Client(second.url, key) as client:
            poll_until(lambda: client.get_chute(cid)["status"] == "ready", "the chute ready after restart", 90, 0.3)
            assert [j["ID"] for j in nomad.jobs.get_jobs(prefix=f"chute-{cid}")] == [f"chute-{cid}"]
            allocs = _running_allocs(st, cid)
            assert len(allocs) == 1

            # A GET shows the cluster view's status at once; the recorder writes the "ready" event on its next pass.
            def recorded_ready() -> list[str] | None:
                found = [e["type"] for e in client.events(cid)]
                return found if "ready" in found else None

            kinds = poll_until(recorded_ready, "the recorded 'ready' event", 30, 0.3)
            assert kinds[:2] == ["accepted", "registered"] and "ready" in kinds

            # Kill it again with everything running, restart: nothing is registered twice or replaced.
            second.kill()
            third = st.scheduler("sched", port=first.port)
            third.start()
            third.wait_healthy()
            # The user retries the deploy: same bundle, same version, still one job and the same instance.
            again = client.deploy(ref)
            assert again["chute_id"] == cid
            poll_until(lambda: client.get_chute(cid)["status"] == "ready", "ready", 60, 0.3)
            assert [j["ID"] for j in nomad.jobs.get_jobs(prefix=f"chute-{cid}")] == [f"chute-{cid}"]
            assert [a["ID"] for a in _running_allocs(st, cid)] == [allocs[0]["ID"]]
            client.delete_chute(cid)
            assert_gone(st, cid)
        third.stop()
        assert json.loads(json.dumps(outcome["error"].detail)) is not None
