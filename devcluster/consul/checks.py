"""Runs HTTP and TCP checks at their interval, expires TTL checks, and reaps long-critical services."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import aiohttp

from chutes.devcluster.consul.catalog import Catalog
from chutes.devcluster.consul.reaping import reap_every
from chutes.devcluster.consul.records import CRITICAL, PASSING, WARNING, Check, CheckDefinition

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 4096


async def probe_http(session: aiohttp.ClientSession, d: CheckDefinition) -> tuple[str, str]:
    """Consul's HTTP check: 2xx passing, 429 warning, anything else (or no answer) critical."""
    assert d.http is not None
    headers = {k: ", ".join(v) for k, v in d.header.items()}
    headers.setdefault("User-Agent", "Consul Health Check")
    try:
        async with session.request(
            d.method or "GET",
            d.http,
            headers=headers,
            data=d.body.encode() if d.body else None,
            timeout=aiohttp.ClientTimeout(total=d.timeout_s),
            ssl=not d.tls_skip_verify,
            allow_redirects=True,
        ) as resp:
            body = (await resp.content.read(OUTPUT_LIMIT)).decode("utf-8", "replace")
            output = f"HTTP {d.method} {d.http}: {resp.status} {resp.reason} Output: {body}"
            if 200 <= resp.status < 300:
                return PASSING, output
            if resp.status == 429:
                return WARNING, output
            return CRITICAL, output
    except TimeoutError:
        return CRITICAL, f"Get {d.http!r}: timeout after {d.timeout_s:g}s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return CRITICAL, f"Get {d.http!r}: {exc}"


async def probe_tcp(d: CheckDefinition) -> tuple[str, str]:
    assert d.tcp is not None
    parts = urlsplit(f"//{d.tcp}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 0
    try:
        async with asyncio.timeout(d.timeout_s):
            _, writer = await asyncio.open_connection(host, port)
        writer.close()
        return PASSING, f"TCP connect {d.tcp}: Success"
    except TimeoutError:
        return CRITICAL, f"dial tcp {d.tcp}: i/o timeout"
    except OSError as exc:
        return CRITICAL, f"dial tcp {d.tcp}: {exc.strerror or exc}"


class CheckRunner:
    """One asyncio task per HTTP/TCP check, plus a reaper for TTL expiry and DeregisterCriticalServiceAfter."""

    def __init__(self, catalog: Catalog, reap_interval_s: float = 0.5) -> None:
        self.catalog = catalog
        self.reap_interval_s = reap_interval_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        catalog.on_check_added.append(self.start)
        catalog.on_check_removed.append(self.stop)

    async def open(self) -> None:
        self._session = aiohttp.ClientSession()
        for check in list(self.catalog.checks.values()):
            self.start(check)
        self._reaper = asyncio.create_task(
            reap_every(self.reap_interval_s, self.reap, log, "consul reaper"), name="consul-reaper"
        )

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *([self._reaper] if self._reaper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()

    def start(self, check: Check) -> None:
        if check.definition.kind not in ("http", "tcp") or self._session is None:
            return
        self.stop(check)
        self._tasks[check.check_id] = asyncio.create_task(self._run(check), name=f"check {check.check_id}")

    def stop(self, check: Check) -> None:
        task = self._tasks.pop(check.check_id, None)
        if task is not None:
            task.cancel()

    async def _run(self, check: Check) -> None:
        d = check.definition
        interval = max(d.interval_s or 10.0, 0.05)
        while self.catalog.checks.get(check.check_id) is check:
            try:
                if d.kind == "http":
                    assert self._session is not None
                    status, output = await probe_http(self._session, d)
                else:
                    status, output = await probe_tcp(d)
                self._record(check, status, output)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("check %s failed to run", check.check_id)
            await asyncio.sleep(interval)

    def _record(self, check: Check, status: str, output: str) -> None:
        """Apply SuccessBeforePassing / FailuresBeforeCritical before changing the visible status."""
        d = check.definition
        if status == PASSING:
            check.consecutive_ok += 1
            check.consecutive_fail = 0
            if check.status != PASSING and check.consecutive_ok <= d.success_before_passing:
                return
        elif status == CRITICAL:
            check.consecutive_fail += 1
            check.consecutive_ok = 0
            if check.status != CRITICAL and check.consecutive_fail <= d.failures_before_critical:
                return
        self.catalog.set_status(check.check_id, status, output)

    def reap(self, now: float) -> None:
        for check in list(self.catalog.checks.values()):
            d = check.definition
            if d.ttl_s is not None and check.ttl_deadline is not None and now > check.ttl_deadline:
                if check.status != CRITICAL:
                    self.catalog.set_status(check.check_id, CRITICAL, "TTL expired")
                check.ttl_deadline = None
        for check in list(self.catalog.checks.values()):
            after = check.definition.deregister_after_s
            if after is None or check.status != CRITICAL or check.critical_since is None:
                continue
            if now - check.critical_since >= after and check.service_id:
                log.info("deregistering %s: check %s critical for %.0fs", check.service_id, check.check_id, after)
                self.catalog.deregister_service(check.service_id)
