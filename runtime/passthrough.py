"""Passthrough cords: forward the call to a server the chute runs beside the runtime (vLLM, SGLang, ...).

The request body is sent unchanged to ``http://127.0.0.1:<passthrough_port><passthrough_path>`` (plus the
query string, if any) with the cord's ``method``, and the upstream answer is streamed back as it arrives:
status, content type and encoding are passed through. Before the upstream answers, a refused or failed
connection is 502 and a timeout 504 (JSON bodies); after it answered, a failure can only cut the stream: for
a streaming cord an ``event: error`` frame ends it cleanly, otherwise the response is left incomplete so that
the client sees a broken transfer rather than a silently truncated body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import aiohttp

from chutes.runtime.asgi import Headers, Send, send_error
from chutes.runtime.sse import error_frame

log = logging.getLogger("chutes.runtime.passthrough")

# Upstream response headers worth passing through; hop-by-hop and framing headers are the server's business.
_FORWARD_RESPONSE = frozenset({b"content-type", b"content-encoding", b"cache-control", b"content-disposition"})
_FORWARD_REQUEST = ("content-type", "accept", "accept-encoding")
CONNECT_TIMEOUT = 10.0


class StreamCut(Exception):
    """The upstream failed after its status line was forwarded; the response cannot be completed."""


class PassthroughProxy:
    """One aiohttp session for every passthrough call of an instance (connection reuse to the upstream)."""

    def __init__(self, extra_headers: Callable[[], Mapping[str, str] | None] = lambda: None) -> None:
        # Read on every call: the engine templates set their engine's API key in a startup hook.
        self._extra = extra_headers
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, force_close=False)
            # auto_decompress off: the client gets the upstream's bytes and its Content-Encoding header.
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(
        self,
        *,
        method: str,
        url: str,
        body: bytes,
        request_headers: Mapping[str, str],
        send: Send,
        response_headers: Callable[[], Headers],
        seconds: float,
        stream: bool,
    ) -> int:
        """Forward one call and stream the answer to ``send``; returns the status sent to the client."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        headers = {k: v for k in _FORWARD_REQUEST if (v := request_headers.get(k))}
        headers.setdefault("content-type", "application/json")
        headers.update(self._extra() or {})
        client_timeout = aiohttp.ClientTimeout(total=seconds, connect=min(CONNECT_TIMEOUT, seconds))
        started = 0  # the upstream status once forwarded
        try:
            async with self._session.request(
                method, url, data=body if method != "GET" or body else None, headers=headers, timeout=client_timeout
            ) as upstream:
                forwarded: Headers = [(k.lower(), v) for k, v in upstream.raw_headers if k.lower() in _FORWARD_RESPONSE]
                await send(
                    {
                        "type": "http.response.start",
                        "status": upstream.status,
                        "headers": forwarded + response_headers(),
                    }
                )
                started = upstream.status
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return upstream.status
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            if started:
                return await self._cut(send, stream, started, f"upstream timed out after {seconds:g} s", exc)
            await send_error(
                send,
                504,
                f"passthrough upstream {url} did not answer within {seconds:g} s",
                "the server the chute runs beside the runtime is slow or stuck",
                response_headers(),
            )
            return 504
        except aiohttp.ClientConnectorError as exc:
            await send_error(
                send,
                502,
                f"passthrough upstream {url} refused the connection: {exc.os_error or exc}",
                "the server the chute starts beside the runtime is not listening (yet)",
                response_headers(),
            )
            return 502
        except aiohttp.ClientError as exc:
            if started:
                return await self._cut(send, stream, started, f"upstream connection failed: {exc}", exc)
            await send_error(send, 502, f"passthrough upstream {url} failed: {exc}", None, response_headers())
            return 502

    @staticmethod
    async def _cut(send: Send, stream: bool, status: int, detail: str, exc: BaseException) -> int:
        log.warning("passthrough stream cut: %s", detail, exc_info=exc)
        if stream:
            await send({"type": "http.response.body", "body": error_frame(detail), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return status
        raise StreamCut(detail) from exc


def passthrough_url(port: int, path: str, query: bytes) -> str:
    url = f"http://127.0.0.1:{port}{path}"
    return f"{url}?{query.decode('latin-1')}" if query else url
