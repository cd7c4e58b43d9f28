"""Raw HTTP/1.1 over a socket, for tests of what a server does with bytes no client library would send."""

from __future__ import annotations

import asyncio
import contextlib


async def exchange(host: str, port: int, data: bytes | list[bytes], wait: float = 5.0) -> bytes:
    """Send ``data`` on a new connection (a list: written piece by piece, 50 ms apart) and return everything the
    server answers until it closes the connection (or ``wait`` seconds pass)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for n, piece in enumerate([data] if isinstance(data, bytes) else data):
            if n:
                await asyncio.sleep(0.05)
            writer.write(piece)
            await writer.drain()
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(wait):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()
