"""uvicorn around the runtime app: signals, draining, the exit code.

uvicorn (uvloop when installed, httptools with the edge limits of ``chutes.core.edge``) serves ``RuntimeApp``. Its
own signal handling would close the listener at once; an instance instead drains: on SIGTERM (or SIGINT)
``/_ready`` and new cord calls turn 503 at once (so Consul takes the instance out of rotation and the
gateway retries elsewhere), the calls in flight finish (up to the drain timeout), then uvicorn stops, the
shutdown hooks run and the process exits 0. A second signal stops at once, without shutdown hooks. A failing
startup hook stops the server the same way with exit code 1.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from types import FrameType

import uvicorn

from chutes.core.edge.protocol import EdgeGuard
from chutes.core.portfile import write_port_file
from chutes.core.server import GracefulServer
from chutes.runtime.app import RuntimeApp
from chutes.runtime.config import ServeConfig
from chutes.runtime.protocols import ChuteLike

log = logging.getLogger("chutes.runtime")

# After the drain, how long uvicorn waits for responses still being written before cancelling them.
GRACEFUL_SECONDS = 5


class RuntimeServer(GracefulServer):
    """A uvicorn server that drains on the first signal instead of closing its listener."""

    def __init__(self, config: uvicorn.Config, app: RuntimeApp, port_file: Path | None = None) -> None:
        super().__init__(config)
        self.app = app
        self.port_file = port_file
        self.bound_port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        app.on_fatal = self._fatal

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                self.bound_port = int(sock.getsockname()[1])
                break
        log.info("listening on http://%s:%s", self.config.host, self.bound_port)
        if self.port_file is not None and self.bound_port is not None:
            write_port_file(self.port_file, self.bound_port)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the main thread between bytecodes: only hand the work to the loop.
        if self._drain is not None or self._loop is None or self.should_exit:
            self.should_exit = True
            self.force_exit = True
            return
        self._loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        if self._drain is not None:
            return
        log.info("signal %s: draining (timeout %g s)", _signal_name(sig), self.app.config.drain_timeout)
        self.app.begin_drain()
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_stop(), name="drain")

    async def _drain_then_stop(self) -> None:
        await self.app.drain()
        self.should_exit = True

    def _fatal(self, code: int) -> None:
        self.app.exit_code = code
        self.should_exit = True


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def build_server(chute: ChuteLike, config: ServeConfig) -> RuntimeServer:
    app = RuntimeApp(chute, config)
    guard = EdgeGuard(config.limits, "runtime", fd_fraction=0.8)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="auto",
        http=guard.protocol(),
        lifespan="on",
        access_log=config.access_log,
        log_config=None,
        log_level=config.log_level,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        server_header=False,
    )
    return RuntimeServer(uv_config, app, config.port_file)


def serve(chute: ChuteLike, config: ServeConfig) -> int:
    """Serve ``chute`` until drained or failed; returns the process exit code."""
    if config.dev and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("--dev on %s: anyone who can reach this address can call the chute unsigned", config.host)
    server = build_server(chute, config)
    server.run()
    return server.app.exit_code
