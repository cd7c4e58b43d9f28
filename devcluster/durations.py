"""Go-style durations: Consul speaks strings ("15s", "1m30s"), Nomad speaks integer nanoseconds."""

from __future__ import annotations

import re

NS_PER_S = 1_000_000_000

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class DurationError(ValueError):
    """A duration string that Go's time.ParseDuration would refuse."""


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string such as ``"1m30s"`` or ``"500ms"``; a bare number means seconds."""
    raw = text.strip()
    if not raw:
        raise DurationError("empty duration")
    sign = -1.0 if raw.startswith("-") else 1.0
    body = raw.lstrip("+-")
    if re.fullmatch(r"\d+(\.\d+)?", body):
        return sign * float(body)
    pos = 0
    total = 0.0
    for match in _PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(body) or pos == 0:
        raise DurationError(f"invalid duration {text!r} (use e.g. '10s', '1m30s', '500ms')")
    return sign * total


def format_duration(seconds: float) -> str:
    """A Go-style rendering of ``seconds`` ("15s", "1m30s", "500ms") as Consul echoes durations."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    frac = seconds - whole
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    out += f"{secs + frac:g}s"
    return out


def ns_to_s(value: int | None, default: float) -> float:
    """Seconds from a Nomad nanosecond duration, ``default`` when unset or zero."""
    return value / NS_PER_S if value else default
