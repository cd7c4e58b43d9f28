"""The agent's calls to Nomad: find this host's Nomad node, and set its dynamic node meta.

python-nomad is synchronous and has no call for ``/v1/client/metadata``, so this uses aiohttp (already loaded
for Consul) against Nomad's HTTP API directly.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from chutes.core.cluster_tls import ClusterTLS

from .config import Address

log = logging.getLogger(__name__)


class NomadError(Exception):
    """Nomad answered with an error; the message carries its status and body."""


# What a failed call to Nomad can raise: connection errors and timeouts, HTTP errors, a body that is not JSON.
NOMAD_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, TimeoutError, ValueError, NomadError)


class NomadLink:
    """Nomad's HTTP API at ``address``; create it inside the running event loop."""

    def __init__(self, address: Address, token: str | None, timeout_s: float = 10.0) -> None:
        self.address = address
        headers = {"X-Nomad-Token": token} if token else {}
        # NOMAD_CACERT, NOMAD_CLIENT_CERT/KEY, NOMAD_TLS_SERVER_NAME, NOMAD_SKIP_VERIFY (chutes.core.cluster_tls).
        self._tls = ClusterTLS.from_env("nomad")
        self._tls_kwargs = self._tls.aiohttp_request_kwargs() if address.scheme == "https" else {}
        self._session = aiohttp.ClientSession(
            base_url=address.url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        )

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self._session.request(method, path, json=body, **self._tls_kwargs) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise NomadError(f"{method} {path}: HTTP {resp.status}: {text.strip()[:300]}")
            return await resp.json(content_type=None) if text else None

    async def _optional(self, path: str) -> Any:
        try:
            return await self._call("GET", path)
        except NomadError as exc:
            log.debug("%s", exc)
            return None

    async def node_named(self, names: list[str]) -> tuple[str, str] | None:
        """``(node ID, name)`` of the first Nomad node whose name is in ``names``, or None."""
        nodes = await self._call("GET", "/v1/nodes")
        by_name = {n.get("Name"): n.get("ID") for n in nodes or [] if isinstance(n, dict)}
        for name in names:
            if by_name.get(name):
                return str(by_name[name]), name
        return None

    async def local_node(self) -> tuple[str, str] | None:
        """``(node ID, name)`` of the Nomad client agent at the address, or None when it runs no client."""
        me = await self._call("GET", "/v1/agent/self")
        stats = (me or {}).get("stats") or {}
        node_id = (stats.get("client") or {}).get("node_id")
        if not node_id:
            return None
        node = await self._optional(f"/v1/node/{node_id}")
        return str(node_id), str((node or {}).get("Name") or node_id)

    async def set_meta(self, node_id: str, meta: dict[str, str]) -> None:
        """Set dynamic node meta (``POST /v1/client/metadata``); other keys of the node are left alone."""
        await self._call("POST", "/v1/client/metadata", {"NodeID": node_id, "Meta": meta})

    async def close(self) -> None:
        await self._session.close()
