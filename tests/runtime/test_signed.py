"""Signed requests against a runtime that is not in --dev mode (real uvicorn, real httpx)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chutes.chute import Chute
from tests.runtime.support import SECRET, serve_in_thread, signed, wait_ready

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Any]]:
    chute = Chute(username="tests", name="signed", image="python:3.12", concurrency=1)

    @chute.cord(public_api_path="/echo")
    async def echo(self: Chute, text: str) -> dict[str, str]:
        return {"text": text}

    @chute.cord(public_api_path="/lookup", public_api_method="GET")
    async def lookup(self: Chute, key: str) -> dict[str, str]:
        return {"key": key}

    @chute.cord(public_api_path="/hold")
    async def hold(self: Chute, seconds: float) -> dict[str, float]:
        await asyncio.sleep(seconds)
        return {"held": seconds}

    with serve_in_thread(chute, invoke_secret=SECRET) as running:
        wait_ready(running.url)
        yield running.url, running.app


def _body(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_signed_call_is_served(served: tuple[str, Any]) -> None:
    url, _ = served
    body = _body({"text": "hi"})
    response = httpx.post(f"{url}/echo", content=body, headers=signed("POST", "/echo", body))
    assert response.status_code == 200 and response.json() == {"text": "hi"}


def test_unsigned_call_is_401(served: tuple[str, Any]) -> None:
    url, _ = served
    response = httpx.post(f"{url}/echo", json={"text": "hi"})
    assert response.status_code == 401
    assert "X-Chutes-Signature" in response.json()["detail"]
    # Unknown paths do not reveal themselves to unsigned callers either.
    assert httpx.post(f"{url}/secret-cord", json={}).status_code == 401


def test_stale_wrong_and_replayed_signatures_are_403(served: tuple[str, Any]) -> None:
    url, _ = served
    # A body no other test sends: identical signed requests within one second share one signature.
    body = _body({"text": "replay-me"})
    stale = signed("POST", "/echo", body, ts=int(time.time()) - 61)
    response = httpx.post(f"{url}/echo", content=body, headers=stale)
    assert response.status_code == 403 and "stale" in response.json()["detail"]
    wrong = signed("POST", "/echo", body, secret="not-the-secret")
    assert httpx.post(f"{url}/echo", content=body, headers=wrong).status_code == 403
    tampered = signed("POST", "/echo", body)
    assert httpx.post(f"{url}/echo", content=_body({"text": "evil"}), headers=tampered).status_code == 403
    headers = signed("POST", "/echo", body)
    assert httpx.post(f"{url}/echo", content=body, headers=headers).status_code == 200
    replay = httpx.post(f"{url}/echo", content=body, headers=headers)
    assert replay.status_code == 403 and "replayed" in replay.json()["detail"]


def test_signed_path_includes_the_query_string(served: tuple[str, Any]) -> None:
    url, _ = served
    good = httpx.get(f"{url}/lookup?key=a%20b", headers=signed("GET", "/lookup?key=a%20b"))
    assert good.status_code == 200 and good.json() == {"key": "a b"}
    no_query = httpx.get(f"{url}/lookup?key=zzz", headers=signed("GET", "/lookup"))
    assert no_query.status_code == 403


def test_health_needs_no_signature(served: tuple[str, Any]) -> None:
    url, _ = served
    for path in ("/_alive", "/_ready", "/_metrics"):
        assert httpx.get(f"{url}{path}").status_code == 200


def test_a_429_does_not_burn_the_signature(served: tuple[str, Any]) -> None:
    url, app = served
    hold_body = _body({"seconds": 0.5})
    echo_body = _body({"text": "retry"})
    retry_headers = signed("POST", "/echo", echo_body)

    async def scenario() -> tuple[int, int, int]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            holder = asyncio.create_task(
                client.post("/hold", content=hold_body, headers=signed("POST", "/hold", hold_body))
            )
            while app.limiter.in_flight < 1:
                await asyncio.sleep(0.005)
            refused = await client.post("/echo", content=echo_body, headers=retry_headers)
            held = await holder
            retried = await client.post("/echo", content=echo_body, headers=retry_headers)
            return refused.status_code, held.status_code, retried.status_code

    assert asyncio.run(scenario()) == (429, 200, 200)
