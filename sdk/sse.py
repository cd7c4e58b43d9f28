"""A small Server-Sent Events reader: lines in, events out (the WHATWG event-stream rules we rely on).

Pure, so both the sync and the async client feed it lines from their own transports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SSEvent:
    """One dispatched event: its type (``message`` by default), its data lines joined by newlines, its id."""

    event: str
    data: str
    id: str | None = None


class SSEParser:
    """Feed it one line at a time (without the line break); it returns an event when a blank line ends one."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SSEvent | None:
        line = line.rstrip("\r")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment, used as a keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def flush(self) -> SSEvent | None:
        """The last event of a stream that ended without a final blank line, if any."""
        return self._dispatch()

    def _dispatch(self) -> SSEvent | None:
        if not self._data and not self._event:
            return None
        event = SSEvent(event=self._event or "message", data="\n".join(self._data), id=self._id)
        self._event, self._data = "", []
        return event
