"""The limits every HTTP server of the platform enforces at the edge, and how they are configured.

One value per process, filled from command-line flags or environment variables with the same names in every
daemon (``CHUTES_MAX_HEADER_BYTES``, ...), so that an operator sets them once for a host. Each daemon picks
its own defaults for the timeouts (an instance keeps connections from the gateway's pool open longer than the
scheduler keeps a CLI's).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class LimitsError(ValueError):
    """A limit that cannot work; the message names the setting."""


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """Limits on what one client connection may send, and on how many connections are open."""

    #: bytes of the header section (names, values, separators), request line excluded: 431 above
    max_header_bytes: int = 16 * 1024
    #: header fields per request: 431 above
    max_headers: int = 100
    #: bytes of the request target (path and query): 414 above
    max_request_line: int = 8 * 1024
    #: seconds from a connection's first byte (or its opening) until the header section is complete
    header_timeout: float = 15.0
    #: seconds an idle keep-alive connection stays open between requests
    idle_timeout: float = 75.0
    #: seconds without a byte while a request body is expected (reading paused by the app does not count)
    body_timeout: float = 60.0
    #: open client connections at most; past it the longest-idle one is closed, or the new one refused (503)
    max_connections: int = 10_000

    def validate(self) -> EdgeLimits:
        for name in ("max_header_bytes", "max_headers", "max_request_line", "max_connections"):
            if getattr(self, name) < 1:
                raise LimitsError(f"{_flag(name)} must be at least 1")
        if self.max_header_bytes < 1024:
            raise LimitsError(f"{_flag('max_header_bytes')} must be at least 1024 (browsers send more than that)")
        for name in ("header_timeout", "idle_timeout", "body_timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise LimitsError(f"{_flag(name)} must be a positive number of seconds")
        return self

    def replace(self, **changes: Any) -> EdgeLimits:
        return dataclasses.replace(self, **changes).validate()


#: environment variable of each limit (the same in every daemon)
ENV_VARS: dict[str, str] = {
    "max_header_bytes": "CHUTES_MAX_HEADER_BYTES",
    "max_headers": "CHUTES_MAX_HEADERS",
    "max_request_line": "CHUTES_MAX_REQUEST_LINE",
    "header_timeout": "CHUTES_HEADER_TIMEOUT",
    "idle_timeout": "CHUTES_IDLE_TIMEOUT",
    "body_timeout": "CHUTES_BODY_TIMEOUT",
    "max_connections": "CHUTES_MAX_CONNECTIONS",
}

_HELP = {
    "max_header_bytes": "bytes of request headers at most (431 above)",
    "max_headers": "request header fields at most (431 above)",
    "max_request_line": "bytes of the request target at most (414 above)",
    "header_timeout": "seconds to receive a request's headers",
    "idle_timeout": "seconds an idle keep-alive connection stays open",
    "body_timeout": "seconds without a byte while reading a request body",
    "max_connections": "open client connections at most",
}


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')} ({ENV_VARS[name]})"


def _convert(name: str, raw: Any) -> Any:
    kind = type(getattr(EdgeLimits(), name))
    try:
        return int(raw) if kind is int else float(raw)
    except (TypeError, ValueError):
        raise LimitsError(f"{_flag(name)}: {raw!r} is not a {'whole number' if kind is int else 'number'}") from None


def from_env(env: Mapping[str, str], defaults: EdgeLimits | None = None) -> EdgeLimits:
    """The limits set in ``env`` over ``defaults``; LimitsError names a bad one."""
    base = defaults or EdgeLimits()
    changes: dict[str, Any] = {
        name: _convert(name, env[var]) for name, var in ENV_VARS.items() if env.get(var, "").strip()
    }
    return dataclasses.replace(base, **changes).validate()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-header-bytes`` ... to an argparse parser (unset flags stay None: see ``from_args``)."""
    group = parser.add_argument_group("edge limits (also from the CHUTES_* environment variables)")
    for name, var in ENV_VARS.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"edge_{name}", default=None,
                           help=f"{_HELP[name]} [env {var}]")  # fmt: skip


def from_args(args: argparse.Namespace, env: Mapping[str, str], defaults: EdgeLimits | None = None) -> EdgeLimits:
    """Flags over the environment over ``defaults``."""
    limits = from_env(env, defaults)
    changes: dict[str, Any] = {
        name: _convert(name, getattr(args, f"edge_{name}"))
        for name in ENV_VARS
        if getattr(args, f"edge_{name}", None) is not None
    }
    return dataclasses.replace(limits, **changes).validate()
