"""Server-Sent Events framing for streaming cords.

Each chunk a streaming cord yields becomes one frame:

- ``bytes`` (or ``bytearray``/``memoryview``) are written to the stream unchanged: the cord frames them
  itself. This is the escape hatch for protocols that are SSE but not JSON per frame, e.g. the OpenAI
  ``data: [DONE]`` terminator, and it is what passthrough cords do with their upstream's bytes.
- anything else, ``str`` included, is JSON-encoded into one ``data: <json>\\n\\n`` frame (a ``str`` chunk
  arrives as a JSON string; pydantic models, dataclasses, datetimes and UUIDs are encoded as pydantic does).

An error after the first frame is sent as ``event: error`` with ``data: {"detail": ...}`` and then the
stream ends cleanly (the status line, 200, was already sent).
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

MEDIA_TYPE = "text/event-stream"


def frame(chunk: Any) -> bytes:
    """Encode one chunk; raises ``pydantic_core.PydanticSerializationError`` when it is not JSON-encodable."""
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    return b"data: " + to_json(chunk) + b"\n\n"


def error_frame(detail: str) -> bytes:
    return b"event: error\ndata: " + to_json({"detail": detail}) + b"\n\n"
