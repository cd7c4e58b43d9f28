"""The one way tests wait for something: poll a check until it returns something truthy, or fail saying what."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Errors a check may raise while what it watches is still starting (it is asked again).
Retried = tuple[type[BaseException], ...]


def poll_until(
    check: Callable[[], T | None],
    what: str,
    timeout: float = 30.0,
    interval: float = 0.1,
    *,
    retry_on: Retried = (Exception,),
) -> T:
    """``check()``'s first truthy value; an AssertionError naming ``what`` and the last value (or error) after
    ``timeout`` seconds. Errors in ``retry_on`` count as "not yet"; others propagate at once."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except retry_on as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


async def apoll_until(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    timeout: float = 30.0,
    interval: float = 0.05,
    *,
    retry_on: Retried = (Exception,),
) -> T:
    """:func:`poll_until` for a coroutine check, sleeping without blocking the loop."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
        except retry_on as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)
