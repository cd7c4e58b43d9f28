"""A uvicorn server in a daemon thread of the test process, for the stand-ins tests talk to (an upstream, a fake
scheduler, an engine): started on a loopback port, stopped at the end of the block."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import uvicorn

from tests.support.polling import poll_until


@contextlib.contextmanager
def uvicorn_thread(server: uvicorn.Server, what: str = "the server") -> Iterator[int]:
    """Run ``server`` (configured with port 0) until the block ends; yields the port it bound."""
    thread = threading.Thread(target=server.run, name=what, daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError(f"{what} stopped before it listened")
        return bool(server.started)

    poll_until(started, f"{what} listening", 10, 0.01, retry_on=())
    try:
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)


def loopback(app: object, **config: object) -> uvicorn.Server:
    """A quiet uvicorn server for ``app`` on 127.0.0.1, port 0."""
    return uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **{"log_level": "warning", **config}))  # type: ignore[arg-type]
