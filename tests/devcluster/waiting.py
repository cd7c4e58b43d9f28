from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout_s: float = 15.0, interval_s: float = 0.05, what: str = "") -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` and the last value on timeout."""
    deadline = time.monotonic() + timeout_s
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or probe!r}; last value: {last!r}")
        time.sleep(interval_s)
        last = probe()
    return last
