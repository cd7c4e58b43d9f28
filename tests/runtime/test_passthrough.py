"""Passthrough cords against a small real upstream server (uvicorn + Starlette on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chutes.chute import Chute
from tests.runtime.support import serve_in_thread, wait_ready
from tests.support.servers import loopback, uvicorn_thread

pytestmark = pytest.mark.timeout(60)


async def echo(request: Request) -> Response:
    return JSONResponse(
        {
            "method": request.method,
            "body": (await request.body()).decode(),
            "query": request.url.query,
            "auth": request.headers.get("authorization"),
            "signature": request.headers.get("x-chutes-signature"),
        }
    )


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for n in (1, 2):
            yield b'data: {"n":%d}\n\n' % n
            await asyncio.sleep(0.05)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def teapot(request: Request) -> Response:
    return JSONResponse({"error": "engine says no"}, status_code=418)


async def slow(request: Request) -> Response:
    await asyncio.sleep(2)
    return JSONResponse({})


UPSTREAM = Starlette(
    routes=[
        Route("/v1/echo", echo, methods=["POST", "PUT"]),
        Route("/v1/stream", stream, methods=["POST"]),
        Route("/v1/teapot", teapot, methods=["POST"]),
        Route("/v1/slow", slow, methods=["POST"]),
    ]
)


@contextlib.contextmanager
def upstream_server() -> Iterator[int]:
    with uvicorn_thread(loopback(UPSTREAM, lifespan="off"), "the upstream") as port:
        yield port


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    # Bound but never listening: connecting to it is refused.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    with upstream_server() as port:
        chute = Chute(username="tests", name="passthrough", image="python:3.12")

        @chute.on_startup()
        async def start_engine(self: Chute) -> None:
            # As the engine templates do: the engine's key is only known once the hook started it.
            self.passthrough_headers["Authorization"] = "Bearer k"

        def cord(name: str, **kwargs: Any) -> None:
            async def func(self: Chute) -> None:
                raise AssertionError("a passthrough cord's function is never called")

            func.__name__ = name
            chute.cord(passthrough=True, passthrough_port=kwargs.pop("passthrough_port", port), **kwargs)(func)

        cord("chat", public_api_path="/v1/echo", passthrough_path="/v1/echo")
        cord("put", public_api_path="/put", passthrough_path="/v1/echo", method="PUT")
        cord("chat_stream", public_api_path="/v1/stream", passthrough_path="/v1/stream", stream=True)
        cord("teapot", passthrough_path="/v1/teapot")
        cord("slow", passthrough_path="/v1/slow")
        cord("dead", passthrough_path="/v1/echo", passthrough_port=dead_port)
        with serve_in_thread(chute, cord_timeout=1.0) as running:
            wait_ready(running.url)
            yield running.url
    dead.close()


def test_body_is_forwarded_unchanged_with_passthrough_headers(served: str) -> None:
    body = b'{"model": "m", "messages": [ {"role": "user"} ]}'
    response = httpx.post(f"{served}/v1/echo?x=1", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.headers["x-chutes-conn-used"] == "1"
    got = response.json()
    assert got == {"method": "POST", "body": body.decode(), "query": "x=1", "auth": "Bearer k", "signature": None}
    assert httpx.post(f"{served}/put", json={"a": 1}).json()["method"] == "PUT"


def test_upstream_stream_is_relayed_as_it_comes(served: str) -> None:
    with httpx.stream("POST", f"{served}/v1/stream", json={"stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read()
    assert body == b'data: {"n":1}\n\ndata: {"n":2}\n\ndata: [DONE]\n\n'


def test_upstream_status_is_passed_through(served: str) -> None:
    response = httpx.post(f"{served}/teapot", json={})
    assert response.status_code == 418 and response.json() == {"error": "engine says no"}


def test_refused_upstream_is_502(served: str) -> None:
    response = httpx.post(f"{served}/dead", json={})
    assert response.status_code == 502
    assert "refused" in response.json()["detail"]


def test_slow_upstream_is_504(served: str) -> None:
    started = time.monotonic()
    response = httpx.post(f"{served}/slow", json={}, timeout=10)
    assert response.status_code == 504 and time.monotonic() - started < 1.9
    assert "did not answer within 1 s" in response.json()["detail"]
