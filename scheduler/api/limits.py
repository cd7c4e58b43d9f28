"""A ceiling on request bodies, applied before any route reads one.

FastAPI reads a route's body before it resolves the route's dependencies, authentication included, so
without a ceiling an anonymous caller could make the scheduler hold a body of any size in memory. JSON bodies
(every JSON input of the API is small) are capped at ``json_limit``; other bodies (multipart uploads:
bundles, job outputs) at ``upload_limit``. A declared ``Content-Length`` over the cap is refused before a byte
is read; a chunked body is counted as it arrives. The answer is 413 with the API's JSON error body.

A JSON body is also measured for nesting (``chutes.core.edge.strictjson``) once it has arrived, before the route
parses it: deeper than ``max_json_depth`` is a 422, where the parser would otherwise overflow its stack.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chutes.core.edge import strictjson

JSON_LIMIT = 1024 * 1024


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its ceiling: an HTTP 413, so that FastAPI's body parsing passes
    it on as it is (it turns other errors into 400) and the API's handler gives it the JSON error shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the {limit}-byte limit")


class TooDeep(HTTPException):
    """Raised from ``receive`` when a JSON body nests too deep (passed on by FastAPI as it is, like BodyTooLarge)."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(422, f"JSON body nested deeper than {max_depth} levels")


def _body(limit: int) -> bytes:
    hint = "JSON inputs are small; pass large data by reference (a URL)" if limit == JSON_LIMIT else "send less"
    return json.dumps({"detail": f"request body over the {limit}-byte limit", "hint": hint}).encode()


class BodyLimit:
    """ASGI middleware: 413 for a request body over its ceiling (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        upload_limit: int,
        json_limit: int = JSON_LIMIT,
        max_json_depth: int = strictjson.DEFAULT_MAX_DEPTH,
    ) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit
        self.max_json_depth = max_json_depth

    def _limit(self, scope: Scope) -> int:
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                return self.json_limit if b"json" in value.lower() else self.upload_limit
        return self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._refuse(send, limit)
                return
        received = 0
        started = False
        is_json = limit == self.json_limit  # small bodies: kept until complete, then measured
        parts: list[bytes] = []

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise BodyTooLarge(limit)
                if is_json:
                    parts.append(chunk)
                    if not message.get("more_body", False):
                        try:
                            strictjson.check_depth(b"".join(parts), self.max_json_depth)
                        except strictjson.JSONTooDeep:
                            raise TooDeep(self.max_json_depth) from None
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        body = _body(limit)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
