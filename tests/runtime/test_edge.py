"""The runtime's edge: the signature is checked before any byte of the body is parsed, JSON nesting is
bounded (422, never a 500), and the connection limits of ``chutes.core.edge`` apply."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chutes.chute import Chute
from tests.runtime.support import SECRET, serve_in_thread, signed, wait_ready

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    chute = Chute(username="tests", name="edge", image="python:3.12")

    @chute.cord(public_api_path="/store")
    async def store(self: Chute, data: dict[str, Any]) -> dict[str, int]:
        return {"keys": len(data)}

    @chute.cord(public_api_path="/chat", stream=True)
    async def chat_stream(self: Chute, stream: bool = True) -> Any:
        yield {"delta": "hi"}

    @chute.cord(public_api_path="/chat")
    async def chat(self: Chute, stream: bool = False) -> dict[str, str]:
        return {"text": "hi"}

    with serve_in_thread(chute, invoke_secret=SECRET) as running:
        wait_ready(running.url)
        yield running.url


def _nested(depth: int) -> bytes:
    return b'{"data": {"x": ' + b"[" * depth + b"]" * depth + b"}}"


@pytest.mark.parametrize("path", ["/store", "/chat"])
def test_an_unsigned_body_is_refused_before_it_is_parsed(url: str, path: str) -> None:
    deep = b'{"stream": true, "data": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    response = httpx.post(f"{url}{path}", content=deep, headers={"content-type": "application/json"})
    assert response.status_code == 401  # not 422 or 500: nothing of it was parsed


def test_json_nested_too_deep_is_422_and_shallow_json_is_served(url: str) -> None:
    for depth, status in ((10, 200), (70, 422), (200_000, 422)):
        body = _nested(depth)
        response = httpx.post(f"{url}/store", content=body, headers=signed("POST", "/store", body), timeout=30)
        assert response.status_code == status, (depth, response.text[:200])
        if status == 422:
            assert "nested deeper than 64" in response.json()["detail"]
    deep_pair = b'{"stream": true, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = httpx.post(f"{url}/chat", content=deep_pair, headers=signed("POST", "/chat", deep_pair), timeout=30)
    assert response.status_code == 422  # the pair's choice refused the depth too, then the unary cord's input


def test_oversized_headers_are_431(url: str) -> None:
    body = b'{"data": {}}'
    headers = {**signed("POST", "/store", body), "X-Padding": "p" * 20_000}
    response = httpx.post(f"{url}/store", content=body, headers=headers)
    assert response.status_code == 431
