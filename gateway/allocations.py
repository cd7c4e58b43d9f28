"""Only instances Nomad actually runs get calls: Consul registrations checked against Nomad's allocations.

Anyone who may write to Consul's catalog could register a service named ``chute-<id>`` pointing at their
own port and receive that chute's calls, signed with its invoke secret. Nomad registers an allocation's
service with the ID ``_nomad-task-<alloc id>-<task>-<service>-<port label>``; this check keeps an instance
only when that allocation exists, belongs to the chute's job (``chute-<id>``, the same name as the service),
is running (desired ``run``, client ``running``) and was given that address and port. A registration that is
not Nomad's, or names another job's allocation or a port it does not hold, gets no traffic.

The allocations of a job come from one query (``GET /v1/allocations?filter=JobID == "…"&resources=true``),
cached for ``ttl`` seconds and refreshed early (at most every ``min_interval``) when a registration names an
allocation not seen yet. When Nomad cannot be asked, instances verified before stay and new ones wait
(``pending``): discovery asks again shortly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp

from chutes.core.cluster_tls import ClusterTLS
from chutes.core.registrations import AllocView, Instance, verify

log = logging.getLogger(__name__)


@dataclass
class _JobAllocs:
    fetched_at: float = -1e18
    allocs: dict[str, AllocView] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class NomadAllocations:
    """The check above over Nomad's HTTP API (a token with ``read-job`` on the namespace); an ``https://``
    address is reached with the TLS settings of ``NOMAD_*`` variables (``chutes.core.cluster_tls``) unless ``tls``
    is given."""

    def __init__(
        self,
        nomad_addr: str,
        token: str | None = None,
        *,
        namespace: str | None = None,
        ttl: float = 5.0,
        min_interval: float = 0.5,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        tls: ClusterTLS | None = None,
    ) -> None:
        self._base = nomad_addr.rstrip("/")
        https = self._base.startswith("https://")
        self._tls_kwargs = (tls or ClusterTLS.from_env("nomad")).aiohttp_request_kwargs() if https else {}
        self._headers = {"X-Nomad-Token": token} if token else {}
        self._namespace = namespace
        self._ttl = ttl
        self._min_interval = min_interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._jobs: dict[str, _JobAllocs] = {}
        self._session: aiohttp.ClientSession | None = None
        self._refused: set[str] = set()  # service ids already logged as refused

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch(self, job_id: str) -> dict[str, AllocView]:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        expr = f'JobID == "{job_id}"'
        url = f"{self._base}/v1/allocations?resources=true&task_states=false&filter={quote(expr)}"
        if self._namespace:
            url += f"&namespace={quote(self._namespace)}"
        async with self._session.get(url, **self._tls_kwargs) as resp:
            if resp.status != 200:
                raise RuntimeError(f"Nomad answered {resp.status}: {(await resp.text())[:200]}")
            data = await resp.json(content_type=None)
        return {str(a["ID"]): AllocView.of(a) for a in data if isinstance(a, dict) and a.get("ID")}

    async def __call__(self, service: str, found: list[Instance]) -> tuple[list[Instance], bool]:
        """The instances of ``service`` that Nomad runs, and whether some could not be checked yet."""
        job_id = service  # the Consul service and the Nomad job of a chute share the name chute-<id>
        entry = self._jobs.setdefault(job_id, _JobAllocs())
        async with entry.lock:
            now = self._clock()
            kept, unknown = verify(job_id, found, entry.allocs)
            age = now - entry.fetched_at
            if age > self._ttl or (unknown and age > self._min_interval):
                try:
                    entry.allocs = await self._fetch(job_id)
                    entry.fetched_at = self._clock()
                except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as exc:
                    log.warning("cannot check %s's instances against Nomad (%s): %d new one(s) wait",
                                service, exc, len(unknown))  # fmt: skip
                    return kept, bool(unknown)
                kept, unknown = verify(job_id, found, entry.allocs)
        for instance in found:
            service_id, address, port = instance
            if instance not in kept and instance not in unknown and service_id not in self._refused:
                if len(self._refused) > 10_000:
                    self._refused.clear()
                self._refused.add(service_id)
                log.warning("service %s registration %s (%s:%d) is not a running allocation of job %s: no traffic",
                            service, service_id, address, port, job_id)  # fmt: skip
        return kept, bool(unknown)
