"""Following the scheduler's access-change notices (``chutes.core.invalidation``) with Consul blocking queries.

One loop per gateway: ``GET /v1/kv/<key>?index=N&wait=...`` returns as soon as the scheduler appends a
notice, and the gateway drops exactly the cache entries the new notices name. When it cannot tell what it
missed (the log was trimmed past its position, or recreated), it drops every cached route and identity:
correct, at the cost of reloading them. While Consul is unreachable the loop retries with backoff and the
caches' TTLs bound how stale an entry can be.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from chutes.core.backoff import Backoff
from chutes.core.blocking import advance
from chutes.core.invalidation import Notice, NoticeLog, pending

if TYPE_CHECKING:
    from chutes.gateway.cache import TTLCache
    from chutes.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)


class KVSource(Protocol):
    """The one Consul call the follower needs: py-consul's ``consul.aio.Consul().kv``."""

    async def get(self, key: str, **kwargs: Any) -> tuple[Any, dict[str, Any] | None]: ...


class InvalidationFollower:
    """Applies new notices with ``apply``; calls ``reset`` when it may have missed some."""

    def __init__(
        self,
        kv: KVSource,
        key: str,
        apply: Callable[[list[Notice]], None],
        reset: Callable[[str], None],
        *,
        wait: str = "30s",
        backoff_max: float = 10.0,
        min_interval: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kv = kv
        self.key = key
        self.apply = apply
        self.reset = reset
        self.wait = wait
        self.backoff_max = backoff_max
        self.min_interval = min_interval
        self.clock = clock
        self.index = 0
        self.epoch: str | None = None
        self.applied = 0  # the number of the last notice applied
        self.synced = asyncio.Event()  # set after the first answer from Consul
        self.healthy = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="invalidation-follower")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        backoff = Backoff.after_first_failure(0.25, self.backoff_max)
        while True:
            started = self.clock()
            try:
                kwargs: dict[str, Any] = {"index": self.index, "wait": self.wait} if self.index else {}
                raw_index, item = await self.kv.get(self.key, **kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.healthy = False
                delay = backoff.next_delay()
                log.warning("following %s failed (%r); caches fall back to their TTLs; retry in %.1fs",
                            self.key, exc, delay)  # fmt: skip
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            self.healthy = True
            self.index = advance(self.index, raw_index).index
            self.observe(item)
            self.synced.set()
            elapsed = self.clock() - started
            if elapsed < self.min_interval:  # an index that keeps changing must not spin the loop
                await asyncio.sleep(self.min_interval - elapsed)

    def observe(self, item: dict[str, Any] | None) -> None:
        """Handle one answer: apply what is new, or reset when the position is lost."""
        first = not self.synced.is_set()
        if first:
            # Whatever was cached before the first answer cannot be checked against the log.
            self.reset("first answer from Consul")
        value = (item or {}).get("Value")
        if not value:
            if self.epoch is not None:
                self.reset("the notice log was removed")
            self.epoch, self.applied = None, 0
            return
        try:
            notice_log = NoticeLog.model_validate_json(value)
        except ValidationError as exc:
            log.warning("unreadable notice log at %s: %s", self.key, exc)
            return
        if first:
            fresh: list[Notice] | None = []
        else:
            if self.epoch is None and self.applied == 0:
                self.epoch = notice_log.epoch  # created after we started following: read it from its start
            fresh = pending(notice_log, self.epoch, self.applied)
        if fresh is None:
            self.reset(f"notices missed (at {self.applied}, log at {notice_log.seq}, epoch {notice_log.epoch})")
        elif fresh:
            self.apply(fresh)
        self.epoch, self.applied = notice_log.epoch, notice_log.seq


def key_alias(api_key: str) -> str:
    """The name the scheduler gives an API key in notices: its sha256 (what the store keeps)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class GatewayCaches:
    """What the notices act on: the gateway's route and identity caches (and its metrics)."""

    def __init__(
        self,
        routes: TTLCache[tuple[str, str], Any],
        identities: TTLCache[str, Any],
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.routes = routes
        self.identities = identities
        self.metrics = metrics
        self.clock = clock

    def apply(self, notices: list[Notice]) -> None:
        routes = identities = 0
        now = self.clock()
        users = frozenset(u for notice in notices for u in notice.users)
        if users:
            identities += self.identities.invalidate_where(lambda _key, ident: ident.username in users)
        for notice in notices:
            routes += self.routes.invalidate_keys((u, s) for u, s in notice.routes)
            for digest in notice.keys:
                identities += self.identities.invalidate_alias(digest, gone=True)
            if self.metrics is not None and notice.at:
                self.metrics.invalidation_lag.observe(max(0.0, now - notice.at))
        if self.metrics is not None:
            self.metrics.invalidations.labels("route").inc(routes)
            self.metrics.invalidations.labels("identity").inc(identities)
        log.debug("applied %d notice(s): %d routes, %d identities dropped", len(notices), routes, identities)

    def reset(self, reason: str) -> None:
        if len(self.routes) or len(self.identities):
            log.info("dropping every cached route and identity: %s", reason)
        self.routes.clear()
        self.identities.clear()
        if self.metrics is not None:
            self.metrics.cache_resets.inc()
