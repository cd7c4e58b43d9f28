"""The agent's calls to Consul, through py-consul's asyncio client (aiohttp).

Registration, TTL updates, deregistration, and the two KV calls of :class:`chutes.agent.kv.KVStore`.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import consul
import consul.aio

from chutes.core.consul_client import consul_aio

from .config import Address
from .kv import KVEntry


class ConsulRefused(Exception):
    """Consul answered but did not accept the call (e.g. a registration that returned false)."""


# What a failed call to Consul can raise: connection errors and timeouts (aiohttp, OS), HTTP errors (py-consul).
CONSUL_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    consul.ConsulException,
    ConsulRefused,
)
PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
OUTPUT_LIMIT = 2000  # Consul keeps at most 4 KiB of check output by default


class ConsulLink:
    """One Consul agent at ``address``; create it inside the running event loop (aiohttp needs one)."""

    def __init__(self, address: Address, token: str | None, timeout_s: float = 10.0) -> None:
        self.address = address
        # The shared factory: TLS from CONSUL_CACERT, CONSUL_CLIENT_CERT/KEY, ... (chutes.core.cluster_tls), and the
        # agent's --consul-token wins over CONSUL_HTTP_TOKEN (which py-consul would otherwise prefer).
        self.client: consul.aio.Consul = consul_aio(address.url, token, timeout=timeout_s)

    async def register(
        self,
        service_id: str,
        name: str,
        *,
        meta: dict[str, str],
        tags: list[str],
        port: int | None,
        checks: list[dict[str, Any]],
    ) -> None:
        ok = await self.client.agent.service.register(
            name,
            service_id=service_id,
            port=port,
            tags=tags,
            meta=meta,
            check=checks[0],
            extra_checks=checks[1:],
            replace_existing_checks=True,
        )
        if not ok:
            raise ConsulRefused(f"Consul refused to register service {service_id}")

    async def update_ttl(self, check_id: str, status: str, note: str) -> bool:
        """Refresh a TTL check; False when Consul does not know the check (it lost our registration)."""
        calls = {
            PASSING: self.client.agent.check.ttl_pass,
            WARNING: self.client.agent.check.ttl_warn,
            CRITICAL: self.client.agent.check.ttl_fail,
        }
        return bool(await calls[status](check_id, notes=note[:OUTPUT_LIMIT] or None))

    async def deregister(self, service_id: str) -> bool:
        return bool(await self.client.agent.service.deregister(service_id))

    async def get(self, key: str) -> KVEntry | None:
        _, item = await self.client.kv.get(key)
        if item is None:
            return None
        return KVEntry(int(item["ModifyIndex"]), item.get("Value") or b"")

    async def put(self, key: str, value: bytes, cas: int) -> bool:
        return bool(await self.client.kv.put(key, value, cas=cas))

    async def close(self) -> None:
        await self.client.close()
