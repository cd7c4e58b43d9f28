"""The dashboard's "try a cord" form: one call of one of a chute's cords, through the gateway, as the user.

Why through the gateway and not to an instance: the gateway is where calls are authenticated, balanced,
limited, woken from zero and metered; a call from the dashboard must behave (and be billed) exactly like
one from ``curl``. Why through the scheduler and not from the browser: the browser has no key to send (the
session keeps it in an HttpOnly cookie) and the gateway lives on another origin. So the scheduler forwards
the key it unsealed from the session, to one fixed address (``CHUTES_GATEWAY_URL``), for a path built only
from the chute's owner, slug and one of its declared cords: never a URL or path the browser chose.

The answer streams back as it arrives (Server-Sent Events of a streaming cord frame by frame). It is marked
``nosniff`` and ``sandbox`` so that a cord answering HTML cannot run as a page of the scheduler's origin.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from chutes.scheduler.api.errors import APIError

MAX_INPUT_BYTES = 64 * 1024
PASSED_HEADERS = ("content-type", "x-chutes-invocation-id", "retry-after")
TIMEOUT = httpx.Timeout(connect=5.0, read=900.0, write=30.0, pool=5.0)


def find_cord(manifest: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The cord called ``name`` in a chute's manifest; 404 when it has none of that name."""
    for cord in manifest.get("cords") or []:
        if cord.get("name") == name:
            return dict(cord)
    raise APIError(404, f"the chute has no cord {name!r}", "pick one of the cords listed on the chute's page")


def cord_url(gateway_url: str, username: str, slug: str, public_api_path: str) -> str:
    """The gateway address of a cord (DESIGN.md's invocation address), each part percent-encoded."""
    segments = [s for s in public_api_path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise APIError(422, f"the cord's path {public_api_path!r} is not a plain path")
    path = "/".join(quote(s, safe="") for s in (username, slug, *segments))
    return f"{gateway_url}/{path}"


def encode_input(method: str, payload: Any) -> tuple[bytes | None, str]:
    """(the body, the query string) for a cord call: JSON for POST; scalar fields as a query for GET."""
    if not isinstance(payload, dict):
        raise APIError(422, "the cord's input must be a JSON object", 'e.g. {"name": "Ada"}')
    if method == "GET":
        if any(isinstance(v, dict | list) for v in payload.values()):
            raise APIError(422, "a GET cord takes only plain values (sent as the query string)")
        return None, urlencode({k: json.dumps(v) if isinstance(v, bool) else v for k, v in payload.items()})
    body = json.dumps(payload, separators=(",", ":")).encode()
    if len(body) > MAX_INPUT_BYTES:
        raise APIError(413, f"the input is over {MAX_INPUT_BYTES // 1024} KiB", "call the gateway directly")
    return body, ""


async def forward(gateway_url: str, api_key: str, method: str, url: str, body: bytes | None, query: str) -> Any:
    """Send the call and stream the gateway's answer back (status, headers and body as they come)."""
    client = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False)
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json, text/event-stream, */*"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = client.build_request(method, url + (f"?{query}" if query else ""), content=body, headers=headers)
    try:
        upstream = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        raise APIError(
            502, f"the gateway at {gateway_url} did not answer: {type(exc).__name__}", "check that it is running"
        ) from None

    async def close() -> None:
        await upstream.aclose()
        await client.aclose()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_bytes():
                yield chunk
        except httpx.HTTPError:
            return  # the gateway went away mid-answer: the browser sees the answer end
        finally:
            await close()  # also when the browser goes away first (closing twice is harmless)

    passed = {k: v for k, v in upstream.headers.items() if k.lower() in PASSED_HEADERS}
    passed.update(
        {
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "X-Chutes-Upstream-Status": str(upstream.status_code),
        }
    )
    return StreamingResponse(
        chunks(), status_code=upstream.status_code, headers=passed, background=BackgroundTask(close)
    )
