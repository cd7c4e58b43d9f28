"""Announcing access and routing changes to the gateways (``chutes.core.invalidation`` has the format).

Every API call that changes who may call a chute or where its calls go (share, unshare, key revocation, a
deploy or redeploy, a delete) publishes a notice once its transaction has committed. The notice is appended
to one Consul KV key with check-and-set, so schedulers publishing at the same time never lose each other's
notices. A publish waits at most ``timeout`` seconds: when Consul is slow or down the API answers anyway
and the notice is retried in the background (the gateways' TTLs bound how long they can be wrong meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
import consul
from pydantic import ValidationError

from chutes.core.invalidation import Notice, NoticeLog, append

if TYPE_CHECKING:
    from chutes.scheduler.metrics import SchedulerMetrics

log = logging.getLogger(__name__)


class CASContention(RuntimeError):
    """Check-and-set kept losing to other writers."""


# What a failed publish can raise: connection errors and timeouts (aiohttp, OS), HTTP errors (py-consul).
PUBLISH_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    consul.ConsulException,
    CASContention,
)
CAS_ATTEMPTS = 20
MAX_QUEUED = 10_000


class InvalidationPublisher:
    """Appends notices to the KV log; queues and retries the ones Consul did not take."""

    def __init__(
        self,
        consul_client: Any,
        key: str,
        metrics: SchedulerMetrics | None = None,
        *,
        timeout: float = 1.0,
        max_backoff: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.consul = consul_client
        self.key = key
        self.metrics = metrics
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.clock = clock
        self._lock = asyncio.Lock()  # one writer per process: no CAS contention with ourselves
        self._queued: list[Notice] = []
        self._retry: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._queued)

    async def publish(
        self,
        *,
        routes: Iterable[tuple[str, str]] = (),
        keys: Iterable[str] = (),
        users: Iterable[str] = (),
    ) -> bool:
        """Announce a change; True once it is in Consul, False when it was queued for a retry."""
        notice = Notice(routes=list(routes), keys=list(keys), users=list(users))
        if notice.empty():
            return True
        try:
            async with asyncio.timeout(self.timeout):
                await self._append(notice)
        except PUBLISH_ERRORS as exc:
            self._queue(notice, exc)
            return False
        self._count("published")
        return True

    async def close(self) -> None:
        task, self._retry = self._retry, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queued:
            log.warning("%d access-change notices were never published (gateways fall back to their TTLs)",
                        len(self._queued))  # fmt: skip

    async def _append(self, notice: Notice) -> None:
        async with self._lock:
            for _ in range(CAS_ATTEMPTS):
                _, item = await self.consul.kv.get(self.key)
                current: NoticeLog | None = None
                if item is not None and item.get("Value"):
                    try:
                        current = NoticeLog.model_validate_json(item["Value"])
                    except ValidationError:
                        log.warning("the notice log at %s is unreadable; starting a new epoch", self.key)
                updated = append(current, notice, self.clock())
                cas = int(item["ModifyIndex"]) if item is not None else 0
                if await self.consul.kv.put(self.key, updated.model_dump_json(), cas=cas):
                    return
        raise CASContention(f"{CAS_ATTEMPTS} check-and-set attempts on {self.key} lost to other writers")

    def _queue(self, notice: Notice, exc: BaseException) -> None:
        log.warning("publishing an access change to Consul failed (%r); retrying in the background", exc)
        self._count("retried")
        self._queued.append(notice)
        if len(self._queued) > MAX_QUEUED:
            del self._queued[: len(self._queued) - MAX_QUEUED]
            self._count("failed")
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_loop(), name="invalidation-retry")

    async def _retry_loop(self) -> None:
        failures = 0
        while self._queued:
            failures += 1
            await asyncio.sleep(min(self.max_backoff, 0.25 * 2**failures) * random.uniform(0.5, 1.0))
            # All queued changes as one notice: a gateway applies them together, which is what it would do
            # with several notices arriving in one blocking round anyway.
            batch = list(self._queued)
            merged = Notice(
                routes=[r for n in batch for r in n.routes],
                keys=[k for n in batch for k in n.keys],
                users=[u for n in batch for u in n.users],
            )
            try:
                async with asyncio.timeout(max(self.timeout, 5.0)):
                    await self._append(merged)
            except PUBLISH_ERRORS as exc:
                log.debug("access-change retry failed: %r", exc)
                continue
            del self._queued[: len(batch)]
            self._count("published")
            log.info("published %d delayed access-change notice(s)", len(batch))

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.invalidations.labels(outcome).inc()
