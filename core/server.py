"""A uvicorn server that stops gracefully on SIGINT/SIGTERM and then exits normally.

uvicorn's own handling re-raises the signal once its shutdown is done, so a clean stop looks like a crash
("killed by a signal"). Here the first signal stops accepting and lets the calls in flight finish; a second
stops at once; the process then exits with its own status.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
    """``uvicorn.Server`` with the signal handling above; subclasses override :meth:`handle_exit` (the runtime
    drains first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True
