"""The reaper loops of the devcluster's Consul (check TTLs, session TTLs): a pure ``reap(now)`` called on a timer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable


async def reap_every(interval_s: float, reap: Callable[[float], None], log: logging.Logger, what: str) -> None:
    """Call ``reap(time.monotonic())`` every ``interval_s`` seconds until cancelled; a failing tick is logged
    on ``log`` as ``<what> tick failed`` and the loop goes on (a reaper must never die)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            reap(time.monotonic())
        except Exception:
            log.exception("%s tick failed", what)
