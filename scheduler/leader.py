"""Leader election among schedulers: a Consul session lock on ``chutes/scheduler/leader``.

Each scheduler runs one ``LeaderElector``. It creates a session with a TTL (renewed every TTL/2), tries to
acquire the key with it, and otherwise waits on the key with blocking queries until the holder releases it
(or its session is invalidated: the holder died, or stopped renewing). Consul's lock-delay then keeps the key
free a little longer, so a leader that lost its session has stopped before anyone else starts.

Leadership ends when the session renewal fails (404: expired or destroyed), when renewal has not succeeded for
most of a TTL (Consul unreachable: the session may be gone already, so the leader steps down before it is),
or when the key no longer names our session. ``on_gain`` and ``on_loss`` are awaited in order, never
overlapping; the leader's loops start in ``on_gain`` and must stop in ``on_loss``. A graceful stop releases the
key (no lock-delay) and destroys the session, so another scheduler takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import consul
from consul.callback import CB

log = logging.getLogger("chutes.scheduler.leader")

LEADER_KEY = "chutes/scheduler/leader"
CONSUL_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, TimeoutError, consul.ConsulException)
Callback = Callable[[], Awaitable[None] | None]


class SessionLost(Exception):
    """Our session is gone or can no longer be trusted: whoever leads with it must stop."""


class LeaderElector:
    """Campaigns for ``key`` with a Consul session (``consul_client`` is a ``consul.aio.Consul``)."""

    def __init__(
        self,
        consul_client: Any,
        *,
        key: str = LEADER_KEY,
        identity: str | None = None,
        ttl_s: float = 10.0,
        lock_delay_s: float = 1.0,
        wait_s: float = 30.0,
        retry_s: float = 0.5,
        max_backoff_s: float = 15.0,
        timeout_s: float = 10.0,
        on_gain: Callback | None = None,
        on_loss: Callback | None = None,
    ) -> None:
        if ttl_s <= 0 or lock_delay_s < 0:
            raise ValueError("ttl_s must be positive and lock_delay_s not negative")
        self.consul = consul_client
        self.key = key
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}"
        self.ttl_s = ttl_s
        self.lock_delay_s = lock_delay_s
        self.wait_s = wait_s
        self.retry_s = retry_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s  # bound on each call that is not a blocking query (py-consul sets none)
        self.on_gain = on_gain
        self.on_loss = on_loss
        self.session_id: str | None = None
        self.terms = 0  # how many times this elector became leader
        self._created_at = time.monotonic()
        self._leading = asyncio.Event()
        self._following = asyncio.Event()
        self._following.set()

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    async def wait_leading(self) -> None:
        """Return once this elector leads."""
        await self._leading.wait()

    async def wait_following(self) -> None:
        """Return once this elector does not lead."""
        await self._following.wait()

    async def current_leader(self) -> str | None:
        """The identity of the scheduler holding the lock, or None while nobody does."""
        async with asyncio.timeout(self.timeout_s):
            return await current_leader(self.consul, self.key)

    # -- the campaign --

    async def run(self) -> None:
        """Campaign until cancelled; on the way out, step down, release the key and destroy the session."""
        failures = 0
        while True:
            session_id: str | None = None
            delay = 0.0
            try:
                session_id = await self._create_session()
                await self._campaign(session_id)
                failures = 0
            except SessionLost as exc:
                log.warning("leadership session %s lost: %s", session_id, exc)
                failures = 0
            except CONSUL_ERRORS as exc:
                failures += 1
                delay = min(self.max_backoff_s, self.retry_s * 2 ** min(failures, 10)) * random.uniform(0.5, 1.0)
                log.warning("leader election: Consul call failed (retrying in %.1fs): %r", delay, exc)
            finally:
                # Runs on cancellation too: the work stops before the lock is given up.
                await self._step_down()
                await self._cleanup(session_id)
            await asyncio.sleep(delay)

    async def _create_session(self) -> str:
        # py-consul's session.create only takes whole seconds >= 10; Consul takes Go durations, and the
        # devcluster can allow shorter TTLs in tests.
        body = {
            "Name": f"chutes-scheduler {self.identity}",
            "TTL": f"{self.ttl_s:g}s",
            "LockDelay": f"{self.lock_delay_s:g}s",
            "Behavior": "release",
        }
        params = [("dc", self.consul.dc)] if self.consul.dc else []
        self._created_at = time.monotonic()
        async with asyncio.timeout(self.timeout_s):
            session_id: str = await self.consul.http.put(
                CB.json(is_id=True),
                "/v1/session/create",
                params=params,
                headers=self.consul.prepare_headers(None),
                data=json.dumps(body),
            )
        self.session_id = session_id
        return session_id

    async def _campaign(self, session_id: str) -> None:
        keeper = asyncio.create_task(self._keep_alive(session_id), name="leader-session-renewal")
        try:
            index = 0
            holder: str | None = None  # the session holding the key, as last read; None: free or unknown
            while True:
                if not self.is_leader and holder is None:
                    acquire = self.consul.kv.put(self.key, self.identity, acquire=session_id)
                    if await self._race(_within(self.timeout_s, acquire), keeper):
                        await self._gain(session_id)
                    elif index:
                        # Free but refused: Consul's lock-delay after the last holder's session ended. Poll.
                        await self._race(asyncio.sleep(self.retry_s), keeper)
                        index, holder = await self._read(index=0, keeper=keeper)
                        continue
                new_index, holder = await self._read(index=index, keeper=keeper)
                if self.is_leader and holder != session_id:
                    raise SessionLost(f"the key {self.key} no longer names our session (holder: {holder})")
                index = 0 if new_index < index else new_index  # a restarted Consul: start over
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, SessionLost, *CONSUL_ERRORS):
                await keeper

    async def _read(self, *, index: int, keeper: asyncio.Task[None]) -> tuple[int, str | None]:
        """Block on the key until it changes after ``index``; (new index, holding session or None)."""
        wait = f"{self.wait_s:g}s" if index else None
        read = self.consul.kv.get(self.key, index=index or None, wait=wait)
        limit = (self.wait_s * 17 / 16 if index else 0) + self.timeout_s
        raw_index, data = await self._race(_within(limit, read), keeper)
        try:
            new_index = max(1, int(raw_index))
        except (TypeError, ValueError):
            new_index = 1
        holder = (data or {}).get("Session") or None
        return new_index, holder

    async def _race(self, awaitable: Awaitable[Any], keeper: asyncio.Task[None]) -> Any:
        """Await ``awaitable`` unless the session ends first (then raise SessionLost)."""
        task = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait({task, keeper}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if keeper.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *CONSUL_ERRORS):
                await task
            keeper.result()  # raises SessionLost (or the error that ended it)
            raise SessionLost("the session renewal stopped")
        return task.result()

    async def _keep_alive(self, session_id: str) -> None:
        """Renew every TTL/2; raise SessionLost when Consul says the session is gone, or when no renewal has
        succeeded for 80% of the TTL (counted from when the last good one was *sent*, so the server's timer
        cannot have run out before we stop)."""
        last_good = self._created_at
        interval = self.ttl_s / 2
        while True:
            await asyncio.sleep(interval)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(self.ttl_s / 4):
                    renewed = await self.consul.session.renew(session_id)
            except consul.NotFound:
                raise SessionLost("Consul no longer knows the session (expired or destroyed)") from None
            except CONSUL_ERRORS as exc:
                if time.monotonic() - last_good >= 0.8 * self.ttl_s:
                    raise SessionLost(
                        f"no renewal succeeded for {time.monotonic() - last_good:.1f}s: {exc!r}"
                    ) from None
                interval = self.ttl_s / 10
                continue
            if not renewed:
                raise SessionLost("Consul no longer knows the session (expired or destroyed)")
            last_good = sent
            interval = self.ttl_s / 2

    async def _gain(self, session_id: str) -> None:
        self.terms += 1
        self._following.clear()
        self._leading.set()
        log.info("%s is now the leader (session %s, term %d)", self.identity, session_id, self.terms)
        await _call(self.on_gain, "on_gain")

    async def _step_down(self) -> None:
        if not self.is_leader:
            return
        self._leading.clear()
        log.info("%s is no longer the leader", self.identity)
        try:
            await _call(self.on_loss, "on_loss")
        finally:
            self._following.set()

    async def _cleanup(self, session_id: str | None) -> None:
        """Release the key (no lock-delay for the next leader) and destroy the session; best effort."""
        if session_id is None:
            return
        with contextlib.suppress(*CONSUL_ERRORS):
            async with asyncio.timeout(2):
                await self.consul.kv.put(self.key, self.identity, release=session_id)
        with contextlib.suppress(*CONSUL_ERRORS):
            async with asyncio.timeout(2):
                await self.consul.session.destroy(session_id)
        if self.session_id == session_id:
            self.session_id = None


async def current_leader(consul_client: Any, key: str = LEADER_KEY) -> str | None:
    """The identity stored in ``key`` while a session holds it, else None."""
    _, data = await consul_client.kv.get(key)
    if not data or not data.get("Session"):
        return None
    value = data.get("Value")
    return value.decode() if isinstance(value, bytes) else value


async def _within(seconds: float, awaitable: Awaitable[Any]) -> Any:
    # asyncio.timeout, not wait_for: on 3.11 wait_for returns the result (dropping the cancellation) when the
    # call finishes in the same loop pass as a cancel, and a dropped cancel left a stopping elector hanging.
    async with asyncio.timeout(seconds):
        return await awaitable


async def _call(callback: Callback | None, name: str) -> None:
    if callback is None:
        return
    try:
        result = callback()
        if inspect.isawaitable(result):
            await result
    except Exception:  # a failing callback must not break the election
        log.exception("leader election: %s callback failed", name)
