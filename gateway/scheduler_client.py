"""The gateway's client for the scheduler's internal API (docs/internal-contracts.md, "For gateways").

The gateway authenticates with its own key (an admin key or one with the ``gateway`` role). Lookups that
find nothing return None (401/404); anything else that goes wrong raises SchedulerUnavailable, which the
gateway answers with 503 (or covers with a cached value).
"""

from __future__ import annotations

import json
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from pydantic import ValidationError

from chutes.gateway.routes import Identity, RouteInfo

_JSON = {"Content-Type": "application/json"}


class SchedulerUnavailable(RuntimeError):
    """The scheduler could not answer (down, timed out, or an unexpected status)."""


class SchedulerAPI(Protocol):
    """What the gateway asks the scheduler; the seam tests and other transports plug into."""

    async def authenticate(self, api_key: str) -> Identity | None: ...

    async def route(self, username: str, slug: str) -> RouteInfo | None: ...

    async def wake(self, chute_id: str) -> None: ...

    async def report_invocations(self, records: bytes, utilisation: dict[str, Any] | None = None) -> None: ...


class SchedulerClient:
    """``SchedulerAPI`` over HTTP with one pooled aiohttp session."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=30),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, json: Any = None, absent: tuple[int, ...] = (), body: bytes | None = None
    ) -> Any:
        url = self._base + path
        headers = None if body is None else _JSON
        try:
            async with self._http().request(method, url, json=json, data=body, headers=headers) as resp:
                if resp.status in absent:
                    return None
                if resp.status >= 300:
                    text = (await resp.text())[:300]
                    raise SchedulerUnavailable(f"scheduler answered {resp.status} to {method} {path}: {text}")
                if resp.status == 204:
                    return {}
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SchedulerUnavailable(f"scheduler unreachable for {method} {path}: {exc!r}") from exc

    async def authenticate(self, api_key: str) -> Identity | None:
        """The identity behind ``api_key``, or None for an unknown or revoked key."""
        data = await self._call("POST", "/v1/internal/authenticate", {"api_key": api_key}, absent=(401, 403))
        return None if data is None else _parse(Identity, data)

    async def route(self, username: str, slug: str) -> RouteInfo | None:
        """The routing information of ``username``'s chute with URL slug ``slug``, or None if there is none."""
        path = f"/v1/internal/routes/{quote(username, safe='')}/{quote(slug, safe='')}"
        data = await self._call("GET", path, absent=(404,))
        return None if data is None else _parse(RouteInfo, data)

    async def wake(self, chute_id: str) -> None:
        """Ask for at least one instance of ``chute_id`` (idempotent)."""
        await self._call("POST", f"/v1/internal/chutes/{quote(chute_id, safe='')}/wake")

    async def report_invocations(self, records: bytes, utilisation: dict[str, Any] | None = None) -> None:
        """Send one batch of invocation records (``records``: already a JSON array, as the flusher joins them)
        for metering, with the gateway's utilisation report (if any)."""
        body = b'{"records":' + records
        if utilisation is not None:
            body += b',"utilisation":' + json.dumps(utilisation, separators=(",", ":")).encode()
        await self._call("POST", "/v1/internal/invocations", body=body + b"}")


def _parse(model: type[Identity] | type[RouteInfo], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SchedulerUnavailable(f"scheduler sent an unexpected {model.__name__}: {exc}") from exc
