"""wait_event: set or timed out, and a cancellation that lands as the event is set still stops the waiter."""

from __future__ import annotations

import asyncio

import pytest

from chutes.core.waiting import wait_event


async def test_it_says_whether_the_event_was_set_within_the_time() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5) is True
    assert await wait_event(event, 0) is True  # already set


async def test_a_cancel_that_lands_as_the_event_is_set_still_stops_the_waiter() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_event(event, 5))
    await asyncio.sleep(0)  # the waiter now waits
    event.set()
    waiter.cancel()  # in the same loop pass: asyncio.wait_for on 3.11 would return True here
    with pytest.raises(asyncio.CancelledError):
        await waiter
