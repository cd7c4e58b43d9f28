"""Waiting for an ``asyncio.Event`` with a deadline: the loops' sleep-until-woken and the shutdowns' bounded waits."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass (None: no limit); whether it is set.

    ``asyncio.timeout``, never ``wait_for``: on Python 3.11 ``wait_for`` returns when the wait ends in the same
    loop pass as a ``cancel()`` and drops the cancellation, so a loop stopped by cancelling it ran on and
    whoever awaited it hung (a stopping leader elector, in CI). Here a cancellation always propagates."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
