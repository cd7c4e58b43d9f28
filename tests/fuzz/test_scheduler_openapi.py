"""Schemathesis against the scheduler's own OpenAPI: no 5xx, and every error answer is JSON with a detail.

One ``chutes-scheduler`` process on a devcluster with one simulated node and its agent (so Nomad and Consul
answer and a 5xx can only be a bug, not an unreachable dependency), an admin, a user ``alice`` with one
deployed chute ``echo`` and a gateway key. For every operation in the schema (read from the app at
collection time, so a new route is fuzzed without editing this file) schemathesis generates requests that
match the schema (positive) and requests that break it (negative); operations on one chute are fuzzed again
with the path pointing at ``echo``, so the handlers' own checks are reached, not only the 404 of an unknown
chute. Examples per operation are bounded (``EXAMPLES``) to keep the module around a minute; no shrinking.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chutes.client import Client
from chutes.scheduler.app import create_app
from chutes.scheduler.config import SchedulerConfig
from tests.support.polling import poll_until
from tests.support.stack import scheduler_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

EXAMPLES = 8
SPEC = create_app(SchedulerConfig(data_dir=Path("/nonexistent"), run_loops=False)).openapi()
SCHEMA = schemathesis.openapi.from_dict(SPEC)
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}
# Deleting the shared chute would turn the pinned runs of the other operations into plain 404s.
NOT_PINNED = {"DELETE /v1/chutes/{ref}"}
INSTANCE_ROUTES = ("/v1/instances/",)
INTERNAL_ROUTES = ("/v1/internal/",)

CHUTE = """\
from chutes.chute import Chute, NodeSelector

chute = Chute(username="alice", name="echo", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.cord(public_api_path="/echo")
async def echo(self, text: str = "hi") -> dict:
    return {"text": text}
"""


@dataclass
class Target:
    url: str
    keys: dict[str, str]
    chute_id: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz-openapi")
    with scheduler_stack(tmp, nodes=("gpu-a=l40s:2",)) as stack:
        sched = stack.scheduler("sched", CHUTES_LOG_LEVEL="warning")
        sched.start()
        sched.wait_healthy()
        with Client(sched.url, stack.admin_key) as admin:
            alice = str(admin.create_user("alice")["api_key"])
            gateway = str(admin.create_key("gw", role="gateway")["api_key"])
        (tmp / "echo_chute.py").write_text(CHUTE)
        with Client(sched.url, alice) as client:
            cid = str(client.deploy(f"{tmp / 'echo_chute.py'}:chute")["chute_id"])
            poll_until(lambda: client.get_chute(cid)["status"] == "ready", "echo ready", 60, 0.3)
        yield Target(sched.url, {"admin": stack.admin_key, "alice": alice, "gateway": gateway}, cid)
        assert sched.alive(), sched.log()


def _key_for(path: str, target: Target) -> str:
    if path.startswith(INTERNAL_ROUTES):
        return target.keys["gateway"]
    if path.startswith(INSTANCE_ROUTES):
        return "cit_not-a-real-instance-token"
    return target.keys["alice"]


def check_answer(case: Any, response: Any) -> None:
    """``response``: schemathesis' Response (headers map to lists of values)."""
    where = f"{case.method} {case.formatted_path} query={case.query!r} body={str(case.body)[:300]!r}"
    assert response.status_code < 500, f"{where} → {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        ctype = response.headers.get("content-type") or [""]
        assert ctype[0].startswith("application/json"), (where, response.headers)
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"], (where, body)


def _fuzz(operation: Any, target: Target, pinned: dict[str, str] | None) -> int:
    calls = 0
    session = requests.Session()
    strategies = [
        operation.as_strategy(mode, path_parameters=pinned) if pinned else operation.as_strategy(mode)
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    ]
    headers = {"Authorization": f"Bearer {_key_for(operation.path, target)}"}

    @settings(
        max_examples=EXAMPLES * len(strategies),
        deadline=None,
        phases=[Phase.generate],  # no shrinking: the first failure is reported as generated
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=st.one_of(*strategies))
    def run(case: Any) -> None:
        nonlocal calls
        if case.query and str(case.query.get("follow", "")).lower() in ("true", "1", "yes", "on"):
            case.query["follow"] = "false"  # a followed stream of a live chute would not end by itself
        response = case.call(base_url=target.url, session=session, headers=headers, timeout=30)
        calls += 1
        check_answer(case, response)

    run()
    return calls


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_5xx_and_json_errors(label: str, target: Target) -> None:
    operation = OPERATIONS[label]
    calls = _fuzz(operation, target, None)
    params = {p.name for p in operation.iter_parameters() if p.location == "path"}
    if params & {"ref", "chute_id"} and label not in NOT_PINNED:
        pinned = {"ref": "echo", "chute_id": target.chute_id, "username": "alice", "slug": "echo"}
        calls += _fuzz(operation, target, {k: v for k, v in pinned.items() if k in params})
    assert calls > 0


def test_every_route_is_in_the_schema() -> None:
    """Routes hidden from the schema (include_in_schema=False) would escape the fuzzer; there are none."""
    app = create_app(SchedulerConfig(data_dir=Path("/nonexistent"), run_loops=False))
    documented = {(m, p) for p, ops in SPEC["paths"].items() for m in ops}
    for route in app.routes:
        methods = getattr(route, "methods", None) or set()
        path = getattr(route, "path", "")
        if path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
            continue
        for method in methods - {"HEAD", "OPTIONS"}:
            assert (method.lower(), path.replace(":path}", "}")) in documented, (method, path)
    assert json.dumps(SPEC)  # the schema itself is JSON-serialisable
