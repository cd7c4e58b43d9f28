"""The few ASGI pieces the gateway needs: the incoming request, its body, and answers.

The gateway is a plain ASGI callable served by uvicorn (httptools, uvloop) with no framework in between:
per call it reads a handful of scope fields and passes headers on as the byte pairs ASGI gives it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from chutes import asgi as _shared
from chutes.asgi import BodyTooLarge as BodyTooLarge
from chutes.asgi import ClientGone as ClientGone
from chutes.asgi import Message as Message
from chutes.asgi import Receive as Receive
from chutes.asgi import Scope as Scope
from chutes.asgi import Send as Send


@dataclass(slots=True)
class Incoming:
    """One HTTP request as the gateway sees it."""

    scope: Scope
    receive: Receive
    send: Send
    method: str
    path: str
    query: str  # raw query string (latin-1), without '?'
    headers: list[tuple[bytes, bytes]]  # names lower-case
    host: bytes

    @classmethod
    def of(cls, scope: Scope, receive: Receive, send: Send) -> Incoming:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        host = b""
        for name, value in headers:
            if name == b"host":
                host = value
                break
        return cls(
            scope, receive, send, scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"),
            headers, host,
        )  # fmt: skip

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def client_ip(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    @property
    def scheme(self) -> str:
        return str(self.scope.get("scheme", "http"))

    async def read_body(self, limit: int) -> bytes:
        """The whole request body; BodyTooLarge past ``limit`` bytes, ClientGone if the client left."""
        return await _shared.read_body(self.receive, limit, self.header(b"content-length"))


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """A complete answer with a Content-Length."""
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def json_error_body(detail: str, hint: str | None) -> bytes:
    return json.dumps({"detail": detail, "hint": hint}).encode()
