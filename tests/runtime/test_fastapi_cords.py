"""FastAPI inside cords, served by real runtimes: Depends (sync, async, generator, sub-dependencies, overrides),
Request, Header, Query, Cookie, Response, BackgroundTasks, HTTPException, response_model and status_code.

The seed's own "Integration with FastAPI Features" example runs in a ``python -m chutes.runtime`` process; the
other cases in uvicorn threads. Cleanup "after the answer" is shown by a cleanup that blocks until the test has
read the whole answer: were it run before, the answer would never arrive.

No ``from __future__ import annotations`` here: the dependencies are local to build_chute, and string
annotations could not name them (chute files define them at module level, where either way works).
"""

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import BackgroundTasks, Cookie, Depends, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel

from chutes.chute import Chute
from tests.runtime.chutes.seed_fastapi import API_KEY
from tests.runtime.support import SECRET, run_process, serve_in_thread, signed, wait_ready
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(60)

SEED_APP = "tests/runtime/chutes/seed_fastapi.py:chute"


# ---- the seed's example, unchanged, in a runtime process ---------------------------------------------------


def test_seed_fastapi_example_in_a_runtime_process(tmp_path: Path) -> None:
    with run_process(tmp_path, SEED_APP, "--dev", "--port", "0") as proc:
        url = proc.wait_listening()
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=10) as client:
            # The security hole of issue 14: without a key the dependency must run and the cord refuse.
            denied = client.post("/secure-endpoint", json={"data": "hello"})
            assert denied.status_code == 401, denied.text
            assert denied.json()["detail"] == "Invalid API key"
            wrong = client.post("/secure-endpoint", json={"data": "hello"}, headers={"X-App-Key": "guess"})
            assert wrong.status_code == 401
            allowed = client.post("/secure-endpoint", json={"data": "hello"}, headers={"X-App-Key": API_KEY})
            assert allowed.status_code == 200, allowed.text
            assert allowed.json() == {"secure_data": "HELLO"}
            # The key is no input field: a body cannot set it.
            forged = client.post("/secure-endpoint", json={"data": "hello", "api_key": API_KEY})
            assert forged.status_code == 422
            assert forged.json()["detail"][0]["loc"] == ["api_key"]

            # Field(...) constraints of the input schema: 422 with the field's error.
            assert client.post("/predict", json={"text": "abc"}).json() == {"generated": "cba", "temperature": 0.7}
            too_hot = client.post("/predict", json={"text": "abc", "temperature": 5})
            assert too_hot.status_code == 422
            assert too_hot.json()["detail"][0]["loc"] == ["temperature"]
            empty = client.post("/predict", json={"text": ""})
            assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["text"]

            # State set by the startup hook and changed by calls is kept across calls.
            first = client.post("/cached-predict", json={"text": "abcd"})
            assert first.json() == {"length": 4}
            assert client.post("/cached-predict", json={"text": "abcd"}).json() == {"length": 4}
            assert client.post("/cached-predict", json={"text": "xy"}).json() == {"length": 2}


def test_seed_fastapi_example_behind_signatures(tmp_path: Path) -> None:
    """Signed mode: the signature check comes first, then FastAPI's dependencies as in --dev."""
    with run_process(tmp_path, SEED_APP, "--port", "0", env={"CHUTES_INVOKE_SECRET": SECRET}) as proc:
        url = proc.wait_listening()
        wait_ready(url)
        body = b'{"data": "x"}'
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.post("/secure-endpoint", content=body).status_code == 401  # unsigned
            no_key = client.post("/secure-endpoint", content=body, headers=signed("POST", "/secure-endpoint", body))
            assert no_key.status_code == 401 and no_key.json()["detail"] == "Invalid API key"
            headers = {**signed("POST", "/secure-endpoint", body), "X-App-Key": API_KEY}
            assert client.post("/secure-endpoint", content=body, headers=headers).json() == {"secure_data": "X"}


# ---- every FastAPI feature, in uvicorn threads -------------------------------------------------------------


class Recorder:
    """What dependencies and tasks did, in order, and a gate that holds cleanups until the test opens it."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.gate = threading.Event()

    def add(self, event: str) -> None:
        self.events.append(event)


class Out(BaseModel):
    name: str
    size: int


def build_chute(rec: Recorder) -> Chute:
    chute = Chute(username="tests", name="fastapi-cords", image="python:3.12", concurrency=8)

    def token(authorization: str | None = Header(None)) -> str:
        if authorization != "Bearer good":
            raise HTTPException(status_code=403, detail="bad token", headers={"WWW-Authenticate": "Bearer"})
        return "good"

    async def user(tok: Annotated[str, Depends(token)], x_user: str = Header("anon")) -> dict[str, str]:
        return {"token": tok, "user": x_user}  # a sub-dependency: token runs first

    def gated_session() -> Iterator[str]:
        rec.add("sync-open")
        try:
            yield "sync-session"
        finally:
            rec.gate.wait(10)  # held until the test has read the answer
            rec.add("sync-close")

    async def async_session() -> AsyncIterator[str]:
        rec.add("async-open")
        try:
            yield "async-session"
        except HTTPException as exc:
            rec.add(f"async-saw-{exc.status_code}")
            raise
        finally:
            await asyncio.to_thread(rec.gate.wait, 10)
            rec.add("async-close")

    def function_scoped() -> Iterator[str]:
        rec.add("fn-open")
        yield "fn"
        rec.add("fn-close")  # before the answer: scope="function"

    if "scope" in inspect.signature(Depends).parameters:

        @chute.cord(public_api_path="/scoped")
        def scoped(self: Chute, value: Annotated[str, Depends(function_scoped, scope="function")]) -> dict[str, Any]:
            rec.add("call")
            return {"value": value}

    @chute.cord(public_api_path="/whoami")
    async def whoami(self: Chute, who: Annotated[dict[str, str], Depends(user)], note: str = "") -> dict[str, Any]:
        return {**who, "note": note}

    @chute.cord(public_api_path="/session")
    def session(self: Chute, n: int, db: str = Depends(gated_session)) -> dict[str, Any]:
        rec.add("call")
        return {"n": n, "db": db}

    @chute.cord(public_api_path="/stream")
    async def stream(
        self: Chute, count: int, db: Annotated[str, Depends(async_session)]
    ) -> AsyncIterator[dict[str, Any]]:
        for i in range(count):
            rec.add(f"chunk-{i}")
            yield {"i": i, "db": db}

    @chute.cord(public_api_path="/sync-stream")
    def sync_stream(self: Chute, db: str = Depends(gated_session)) -> Iterator[dict[str, Any]]:
        for i in range(2):
            yield {"i": i, "db": db}

    @chute.cord(public_api_path="/fails")
    async def fails(self: Chute, db: Annotated[str, Depends(async_session)]) -> None:
        raise HTTPException(status_code=409, detail="conflict in the cord")

    @chute.cord(public_api_path="/request")
    async def request_info(
        self: Chute,
        request: Request,
        response: Response,
        tasks: BackgroundTasks,
        page: Annotated[int, Query(ge=1)] = 1,
        session_id: Annotated[str | None, Cookie()] = None,
    ) -> dict[str, Any]:
        response.headers["X-Handled-By"] = "cord"
        tasks.add_task(rec.add, "background")
        body = await request.json()
        return {"page": page, "cookie": session_id, "path": request.url.path, "body": body, "app": request.app is self}

    @chute.cord(public_api_path="/search", public_api_method="GET")
    async def search(
        self: Chute, text: str, limit: Annotated[int, Query(le=50)] = 10, who: dict[str, str] = Depends(user)
    ) -> dict[str, Any]:
        return {"text": text, "limit": limit, "user": who["user"]}

    @chute.cord(public_api_path="/created", response_model=Out, status_code=201)
    def created(self: Chute, name: str) -> dict[str, Any]:
        return {"name": name, "size": len(name), "secret": "not in the answer"}

    class Item(BaseModel):
        name: str

    @chute.cord(public_api_path="/model", input_schema=Item)
    def model_first(self: Chute, data: Item, who: dict[str, str] = Depends(user)) -> dict[str, str]:
        return {"name": data.name, **who}

    return chute


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[httpx.Client, Recorder, Chute]]:
    rec = Recorder()
    chute = build_chute(rec)
    with serve_in_thread(chute) as server, httpx.Client(base_url=server.url, timeout=15) as client:
        wait_ready(server.url)
        yield client, rec, chute


@pytest.fixture
def rec(served: tuple[httpx.Client, Recorder, Chute]) -> Iterator[Recorder]:
    recorder = served[1]
    recorder.events.clear()
    recorder.gate.clear()
    yield recorder
    recorder.gate.set()


def test_sub_dependencies_and_headers(served: tuple[httpx.Client, Recorder, Chute]) -> None:
    client = served[0]
    ok = client.post("/whoami", json={"note": "hi"}, headers={"Authorization": "Bearer good", "X-User": "ada"})
    assert ok.json() == {"token": "good", "user": "ada", "note": "hi"}
    assert client.post("/whoami", json={}, headers={"Authorization": "Bearer good"}).json()["user"] == "anon"
    refused = client.post("/whoami", json={}, headers={"Authorization": "Bearer bad"})
    assert refused.status_code == 403 and refused.json()["detail"] == "bad token"
    assert refused.headers["www-authenticate"] == "Bearer"


def test_generator_dependency_cleanup_runs_after_the_answer(
    served: tuple[httpx.Client, Recorder, Chute], rec: Recorder
) -> None:
    answer = served[0].post("/session", json={"n": 3})
    assert answer.json() == {"n": 3, "db": "sync-session"}
    assert rec.events == ["sync-open", "call"]  # the answer is here, the cleanup still waits
    rec.gate.set()
    poll_until(lambda: rec.events[-1:] == ["sync-close"], "the recorded events", interval=0.01)


def test_function_scoped_dependencies_close_before_the_answer(
    served: tuple[httpx.Client, Recorder, Chute], rec: Recorder
) -> None:
    if "scope" not in inspect.signature(Depends).parameters:
        pytest.skip("this FastAPI has no Depends(scope=...)")
    answer = served[0].post("/scoped", json={})
    assert answer.json() == {"value": "fn"}
    assert rec.events == ["fn-open", "call", "fn-close"]  # already closed when the answer arrived


def test_cleanup_runs_after_a_stream_has_ended(served: tuple[httpx.Client, Recorder, Chute], rec: Recorder) -> None:
    answer = served[0].post("/stream", json={"count": 3})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    assert answer.text.count("data:") == 3 and '"db":"async-session"' in answer.text
    assert rec.events == ["async-open", "chunk-0", "chunk-1", "chunk-2"]
    rec.gate.set()
    poll_until(lambda: rec.events[-1:] == ["async-close"], "the recorded events", interval=0.01)

    rec.events.clear()
    rec.gate.clear()
    answer = served[0].post("/sync-stream", json={})
    assert answer.text.count('"db":"sync-session"') == 2
    assert "sync-close" not in rec.events
    rec.gate.set()
    poll_until(lambda: rec.events[-1:] == ["sync-close"], "the recorded events", interval=0.01)


def test_http_exception_in_the_cord_reaches_the_dependency_then_the_client(
    served: tuple[httpx.Client, Recorder, Chute], rec: Recorder
) -> None:
    rec.gate.set()  # the error answer comes after the cleanup here, as in FastAPI
    answer = served[0].post("/fails", json={})
    assert answer.status_code == 409 and answer.json()["detail"] == "conflict in the cord"
    assert rec.events == ["async-open", "async-saw-409", "async-close"]


def test_request_response_query_cookie_and_background_tasks(
    served: tuple[httpx.Client, Recorder, Chute], rec: Recorder
) -> None:
    client = served[0]
    answer = client.post("/request?page=2", json={"free": "form"}, headers={"Cookie": "session_id=s1"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"page": 2, "cookie": "s1", "path": "/request", "body": {"free": "form"}, "app": True}
    assert answer.headers["x-handled-by"] == "cord"
    poll_until(lambda: rec.events == ["background"], "the recorded events", interval=0.01)
    invalid = client.post("/request?page=0", json={})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["query", "page"]
    assert "input" not in invalid.json()["detail"][0]  # the rejected value is not echoed


def test_get_cord_input_and_query_parameters_share_the_query_string(
    served: tuple[httpx.Client, Recorder, Chute],
) -> None:
    client = served[0]
    auth = {"Authorization": "Bearer good", "X-User": "ada"}
    answer = client.get("/search?text=gpu&limit=5", headers=auth)
    assert answer.json() == {"text": "gpu", "limit": 5, "user": "ada"}, answer.text
    assert client.get("/search?text=gpu", headers=auth).json()["limit"] == 10
    too_many = client.get("/search?text=gpu&limit=500", headers=auth)
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["query", "limit"]
    unknown = client.get("/search?text=gpu&color=red", headers=auth)
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["color"]


def test_response_model_and_status_code(served: tuple[httpx.Client, Recorder, Chute]) -> None:
    answer = served[0].post("/created", json={"name": "abc"})
    assert answer.status_code == 201
    assert answer.json() == {"name": "abc", "size": 3}


def test_input_schema_with_a_dependency(served: tuple[httpx.Client, Recorder, Chute]) -> None:
    client = served[0]
    answer = client.post("/model", json={"name": "n"}, headers={"Authorization": "Bearer good"})
    assert answer.json() == {"name": "n", "token": "good", "user": "anon"}
    assert client.post("/model", json={"name": "n"}).status_code == 403


def test_dependency_overrides_as_in_fastapi_tests(served: tuple[httpx.Client, Recorder, Chute]) -> None:
    client, _, chute = served
    whoami = next(c for c in chute.cords if c.name == "whoami")
    assert whoami.dependant is not None
    user = whoami.dependant.dependencies[0].call
    chute.dependency_overrides[user] = lambda: {"token": "test", "user": "override"}
    try:
        assert client.post("/whoami", json={}).json() == {"token": "test", "user": "override", "note": ""}
    finally:
        chute.dependency_overrides.clear()
    assert client.post("/whoami", json={}).status_code == 403


def test_plain_cords_stay_on_the_fast_path() -> None:
    chute = Chute(username="tests", name="plain", image="python:3.12")

    @chute.cord()
    async def echo(self: Chute, text: str) -> dict[str, str]:
        return {"text": text}

    from chutes.runtime.routes import build_routes

    routes = build_routes(chute.cords, 30.0)
    route = routes["/echo"]["POST"]
    assert echo.dependant is None and getattr(route, "binding", "missing") is None
