"""Small ASGI helpers: types, reading a bounded body, sending a whole response.

The runtime speaks raw ASGI on its hot path (no framework routing or dependency injection per call), which
is what keeps its overhead over a bare FastAPI app small.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

from chutes.core import asgi as _shared
from chutes.core.asgi import BodyTooLarge as BodyTooLarge
from chutes.core.asgi import ClientGone as ClientGone
from chutes.core.asgi import Message as Message
from chutes.core.asgi import Receive as Receive
from chutes.core.asgi import Scope as Scope
from chutes.core.asgi import Send as Send

Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; ``BodyTooLarge`` past ``limit`` bytes, ``ClientGone`` if the client left."""
    return await _shared.read_body(receive, limit, header(scope, b"content-length"))


def error_body(detail: Any, hint: str | None = None) -> bytes:
    payload: dict[str, Any] = {"detail": detail}
    if hint:
        payload["hint"] = hint
    return to_json(payload, fallback=str)


async def send_response(
    send: Send, status: int, body: bytes, content_type: bytes = JSON, headers: Headers | None = None
) -> None:
    response_headers: Headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        response_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send, status: int, detail: Any, hint: str | None = None, headers: Headers | None = None
) -> None:
    await send_response(send, status, error_body(detail, hint), JSON, headers)
