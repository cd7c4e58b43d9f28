"""The floor of any Python proxy on this machine: bytes relayed between a client and the instance on uvloop.

    python -m benchmarks._relay_floor --upstream-port PORT --port-file FILE

Each client connection gets its own connection to the instance (as nginx's keep-alive upstreams do here), and
every read from one side is written to the other as it is: no parsing, no routing, no signing, no metering.
``gateway_overhead`` runs it as a fourth path: its CPU per call is what Python and uvloop cost to move one call's
bytes (two reads, two writes, the event loop's wake-ups), so the gateway's CPU above it is the gateway's own
per-call work. Not a proxy anyone should run; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class _Client(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.early: list[bytes] | None = []  # what the client sent before the instance's connection was up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, self.upstream = await loop.create_connection(lambda: _Upstream(self), self.host, self.port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        assert self.upstream.transport is not None
        for data in self.early or ():
            self.upstream.transport.write(data)
        self.early = None

    def data_received(self, data: bytes) -> None:
        if self.early is not None:
            self.early.append(data)
        elif self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def serve(upstream_port: int, port_file: Path, upstream_host: str = "127.0.0.1") -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(upstream_host, upstream_port), "127.0.0.1", 0)
    port_file.write_text(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.upstream_port, args.port_file))


if __name__ == "__main__":
    main()
