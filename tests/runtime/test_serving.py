"""Cords served by a real uvicorn on loopback, called with httpx: limits, validation, streams, timeouts, errors."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import HTTPException
from pydantic import BaseModel
from starlette.responses import Response

from chutes.chute import Chute
from tests.runtime.support import serve_in_thread, wait_ready
from tests.support.polling import apoll_until, poll_until

pytestmark = pytest.mark.timeout(60)


class Item(BaseModel):
    name: str
    qty: int


def make_chute(concurrency: int = 2) -> tuple[Chute, dict[str, Any]]:
    chute = Chute(username="tests", name="serving", image="python:3.12", concurrency=concurrency)
    seen: dict[str, Any] = {"cancelled": threading.Event(), "ticks_closed": threading.Event()}

    @chute.cord(public_api_path="/echo")
    async def echo(self: Chute, text: str, times: int = 1) -> dict[str, str]:
        return {"text": text * times}

    @chute.cord(public_api_path="/item")
    async def item(self: Chute, data: Item) -> Item:
        return Item(name=data.name.upper(), qty=data.qty + 1)

    @chute.cord(public_api_path="/query", public_api_method="GET")
    async def query(self: Chute, a: int, b: str = "x") -> dict[str, Any]:
        return {"a": a, "b": b}

    @chute.cord(public_api_path="/wait")
    async def wait(self: Chute, seconds: float = 1.0) -> dict[str, float]:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            seen["cancelled"].set()
            raise
        return {"waited": seconds}

    @chute.cord(public_api_path="/block")
    def block(self: Chute, seconds: float = 1.0) -> dict[str, Any]:
        time.sleep(seconds)
        return {"thread": threading.current_thread().name}

    @chute.cord(public_api_path="/count")
    async def count(self: Chute, to: int = 3) -> AsyncIterator[dict[str, int]]:
        for n in range(1, to + 1):
            yield {"n": n}
            await asyncio.sleep(0.01)

    @chute.cord(public_api_path="/sync_count")
    def sync_count(self: Chute, to: int = 3) -> Iterator[str]:
        for n in range(to):
            yield f"chunk {n}"

    @chute.cord(public_api_path="/ticks")
    def ticks(self: Chute) -> Iterator[dict[str, int]]:
        try:
            for n in range(1000):
                yield {"tick": n}
                time.sleep(0.05)
        finally:
            seen["ticks_closed"].set()

    @chute.cord(public_api_path="/fail_early")
    async def fail_early(self: Chute) -> AsyncIterator[dict[str, int]]:
        raise RuntimeError("model not loaded")
        yield {"never": 1}

    @chute.cord(public_api_path="/fail_late")
    async def fail_late(self: Chute) -> AsyncIterator[dict[str, int]]:
        yield {"n": 1}
        raise RuntimeError("GPU fell off the bus")

    @chute.cord(public_api_path="/stall_early")
    async def stall_early(self: Chute) -> AsyncIterator[dict[str, int]]:
        await asyncio.sleep(5)
        yield {"never": 1}

    @chute.cord(public_api_path="/stall_late")
    async def stall_late(self: Chute) -> AsyncIterator[dict[str, int]]:
        yield {"n": 1}
        await asyncio.sleep(5)
        yield {"never": 2}

    @chute.cord(public_api_path="/boom")
    async def boom(self: Chute) -> dict[str, Any]:
        raise ValueError("bad things")

    @chute.cord(public_api_path="/teapot")
    async def teapot(self: Chute) -> dict[str, Any]:
        raise HTTPException(status_code=418, detail="short and stout")

    @chute.cord(public_api_path="/image")
    async def image(self: Chute) -> Response:
        return Response(content=b"\xff\xd8jpeg", media_type="image/jpeg")

    @chute.cord(public_api_path="/raw", output_content_type="application/octet-stream")
    async def raw(self: Chute) -> bytes:
        return b"\x00\x01"

    @chute.cord(public_api_path="/unencodable")
    async def unencodable(self: Chute) -> Any:
        return object()

    @chute.cord(public_api_path="/v1/chat")
    async def chat(self: Chute, stream: bool = False) -> dict[str, str]:
        return {"kind": "whole"}

    @chute.cord(public_api_path="/v1/chat")
    async def chat_stream(self: Chute, stream: bool = True) -> AsyncIterator[dict[str, str]]:
        yield {"kind": "stream"}

    @chute.get("/custom")
    async def custom() -> dict[str, str]:
        return {"custom": "route"}

    return chute, seen


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Any, dict[str, Any]]]:
    chute, seen = make_chute()
    with serve_in_thread(chute, cord_timeout=1.5) as running:
        wait_ready(running.url)
        yield running.url, running.app, seen


def test_health_endpoints(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    assert httpx.get(f"{url}/_alive").json() == {"status": "alive"}
    assert httpx.get(f"{url}/_ready").json() == {"status": "ready"}
    metrics = httpx.get(f"{url}/_metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "chutes_concurrency_limit 2.0" in metrics.text


def test_cord_at_public_path_and_at_post_path_with_conn_headers(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    for path in ("/echo", "/echo"):
        response = httpx.post(f"{url}{path}", json={"text": "ab", "times": 2})
        assert response.status_code == 200 and response.json() == {"text": "abab"}
        assert response.headers["x-chutes-conn-used"] == "1"
        assert response.headers["x-chutes-conn-available"] == "1"
    assert httpx.post(f"{url}/item", json={"name": "bolt", "qty": 1}).json() == {"name": "BOLT", "qty": 2}
    assert httpx.get(f"{url}/query", params={"a": "5"}).json() == {"a": 5, "b": "x"}
    assert httpx.post(f"{url}/query", json={"a": 6, "b": "y"}).json() == {"a": 6, "b": "y"}
    assert httpx.get(f"{url}/echo").status_code == 405
    assert httpx.post(f"{url}/nowhere", json={}).status_code == 404


def test_invalid_input_is_422_with_field_errors(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    response = httpx.post(f"{url}/echo", json={"times": "many"})
    assert response.status_code == 422
    errors = {tuple(e["loc"]): e["type"] for e in response.json()["detail"]}
    assert errors == {("text",): "missing", ("times",): "int_parsing"}
    assert "x-chutes-conn-used" in response.headers
    assert httpx.post(f"{url}/item", content=b"{not json").status_code == 422
    assert httpx.post(f"{url}/echo", json={"text": "a", "extra": 1}).status_code == 422
    assert httpx.get(f"{url}/query", params={"a": "five"}).status_code == 422


def test_third_concurrent_call_gets_429_while_two_run(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, app, _ = served

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            first_two = [asyncio.create_task(client.post("/wait", json={"seconds": 0.8})) for _ in range(2)]

            async def two_in_flight() -> bool:
                return app.limiter.in_flight >= 2

            await apoll_until(two_in_flight, "two calls in flight", 5, 0.005)
            third = await client.post("/wait", json={"seconds": 0.8})
            return list(await asyncio.gather(*first_two)), third

    first_two, third = asyncio.run(scenario())
    assert [r.status_code for r in first_two] == [200, 200]
    assert third.status_code == 429
    assert third.headers["retry-after"] == "1"
    assert third.headers["x-chutes-conn-used"] == "2" and third.headers["x-chutes-conn-available"] == "0"
    assert "concurrency limit" in third.json()["detail"]
    # Health and metrics were never behind the limit; the slots are free again.
    assert app.limiter.in_flight == 0
    assert 'chutes_requests_total{cord="wait",status="429"} 1.0' in httpx.get(f"{url}/_metrics").text


def test_health_answers_while_the_instance_is_full(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, app, _ = served

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            busy = [asyncio.create_task(client.post("/block", json={"seconds": 0.6})) for _ in range(2)]
            while app.limiter.in_flight < 2:
                await asyncio.sleep(0.005)
            codes = [(await client.get(p)).status_code for p in ("/_alive", "/_ready", "/_metrics")]
            await asyncio.gather(*busy)
            return codes

    assert asyncio.run(scenario()) == [200, 200, 200]


def test_stream_frames_arrive_in_order(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    with httpx.stream("POST", f"{url}/count", json={"to": 4}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-chutes-conn-used"] == "1"
        body = response.read()
    assert body == b"".join(b'data: {"n":%d}\n\n' % n for n in range(1, 5))
    sync_body = httpx.post(f"{url}/sync_count", json={"to": 2}).content
    assert sync_body == b'data: "chunk 0"\n\ndata: "chunk 1"\n\n'


def test_exception_before_first_frame_is_500_json(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    response = httpx.post(f"{url}/fail_early", json={})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert "RuntimeError: model not loaded" in response.json()["detail"]


def test_exception_after_first_frame_is_an_error_event(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    response = httpx.post(f"{url}/fail_late", json={})
    assert response.status_code == 200
    assert response.text.startswith('data: {"n":1}\n\nevent: error\ndata: {"detail":')
    assert "GPU fell off the bus" in response.text and response.text.endswith("\n\n")


def test_stream_timeouts(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    early = httpx.post(f"{url}/stall_early", json={}, timeout=10)
    assert early.status_code == 504 and "sent nothing within 1.5 s" in early.json()["detail"]
    late = httpx.post(f"{url}/stall_late", json={}, timeout=10)
    assert late.status_code == 200
    assert (
        late.text == 'data: {"n":1}\n\nevent: error\ndata: {"detail":"cord \'stall_late\' timed out after 1.5 s"}\n\n'
    )


def test_errors_from_user_code(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    boom = httpx.post(f"{url}/boom", json={})
    assert boom.status_code == 500 and "ValueError: bad things" in boom.json()["detail"]
    teapot = httpx.post(f"{url}/teapot", json={})
    assert teapot.status_code == 418 and teapot.json()["detail"] == "short and stout"
    unencodable = httpx.post(f"{url}/unencodable", json={})
    assert unencodable.status_code == 500 and "not JSON-serialisable" in unencodable.json()["detail"]


def test_responses_and_bytes(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    image = httpx.post(f"{url}/image", json={})
    assert image.headers["content-type"] == "image/jpeg" and image.content == b"\xff\xd8jpeg"
    assert image.headers["x-chutes-conn-used"] == "1"
    raw = httpx.post(f"{url}/raw", json={})
    assert raw.headers["content-type"] == "application/octet-stream" and raw.content == b"\x00\x01"


def test_timeouts_are_504(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, app, _ = served
    slow_async = httpx.post(f"{url}/wait", json={"seconds": 5}, timeout=10)
    assert slow_async.status_code == 504 and "timed out after 1.5 s" in slow_async.json()["detail"]
    started = time.monotonic()
    slow_sync = httpx.post(f"{url}/block", json={"seconds": 2.5}, timeout=10)
    assert slow_sync.status_code == 504 and time.monotonic() - started < 2.4
    # The thread still runs: its slot stays taken until it returns.
    assert app.limiter.in_flight == 1
    poll_until(lambda: app.limiter.in_flight == 0, "the slot released", 5, 0.02)


def test_client_disconnect_cancels_async_work(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, app, seen = served
    seen["cancelled"].clear()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/wait", json={"seconds": 1.2}, timeout=0.3)
    assert seen["cancelled"].wait(2), "the cord was not cancelled when its client went away"
    poll_until(lambda: app.limiter.in_flight == 0, "the slot released", 2, 0.01)
    assert 'chutes_requests_total{cord="wait",status="499"}' in httpx.get(f"{url}/_metrics").text


def test_client_leaving_a_sync_stream_closes_the_generator(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, app, seen = served
    with httpx.stream("POST", f"{url}/ticks", json={}) as response:
        first = next(response.iter_lines())
        assert first == 'data: {"tick":0}'
    assert seen["ticks_closed"].wait(5), "the generator was not closed when its client went away"
    poll_until(lambda: app.limiter.in_flight == 0, "the slot released", 2, 0.01)


def test_stream_pair_is_picked_by_the_body(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    assert httpx.post(f"{url}/v1/chat", json={}).json() == {"kind": "whole"}
    assert httpx.post(f"{url}/v1/chat", json={"stream": True}).text == 'data: {"kind":"stream"}\n\n'


def test_user_routes_on_the_chute_still_work(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    response = httpx.get(f"{url}/custom")
    assert response.status_code == 200 and response.json() == {"custom": "route"}
    assert response.headers["x-chutes-conn-available"] == "1"


def test_metrics_count_calls_by_cord_and_status(served: tuple[str, Any, dict[str, Any]]) -> None:
    url, _, _ = served
    httpx.post(f"{url}/echo", json={"text": "m"})
    text = httpx.get(f"{url}/_metrics").text
    for name in (
        "chutes_in_flight 0.0",
        'chutes_requests_total{cord="echo",status="200"}',
        'chutes_request_duration_seconds_bucket{cord="echo",le="0.005"}',
    ):
        assert name in text


def test_ready_is_503_until_startup_hooks_finish() -> None:
    chute = Chute(username="tests", name="slow-start", image="python:3.12")
    gate = threading.Event()

    @chute.on_startup()
    def load_weights(self: Chute) -> None:
        gate.wait(10)

    @chute.cord()
    async def ping(self: Chute) -> str:
        return "pong"

    with serve_in_thread(chute) as running:
        assert httpx.get(f"{running.url}/_alive").status_code == 200
        ready = httpx.get(f"{running.url}/_ready")
        assert ready.status_code == 503 and ready.json() == {"status": "starting"}
        early = httpx.post(f"{running.url}/ping", json={})
        assert early.status_code == 503 and "starting" in early.json()["detail"]
        gate.set()
        wait_ready(running.url)
        assert httpx.post(f"{running.url}/ping", json={}).text == "pong"  # `-> str`: text/plain


def test_oversized_body_is_413() -> None:
    chute = Chute(username="tests", name="small-bodies", image="python:3.12")

    @chute.cord()
    async def take(self: Chute, text: str) -> dict[str, int]:
        return {"length": len(text)}

    with serve_in_thread(chute, max_body_bytes=100) as running:
        wait_ready(running.url)
        assert httpx.post(f"{running.url}/take", json={"text": "a" * 50}).json() == {"length": 50}
        response = httpx.post(f"{running.url}/take", json={"text": "a" * 500})
        assert response.status_code == 413 and "larger than 100 bytes" in response.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
            yield b'{"text": "'
            yield b"a" * 500
            yield b'"}'

        assert httpx.post(f"{running.url}/take", content=chunks()).status_code == 413
