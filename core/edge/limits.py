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

from chutes.core.settings import Setting, Settings


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


#: The limits as settings: the same variable (and, where a daemon has flags, flag) in every server; each daemon
#: passes its own defaults (docs/configuration.md, "Edge limits").
_DEFAULTS = EdgeLimits()
SETTINGS = Settings(
    "edge limits",
    [
        Setting("max_header_bytes", "bytes of request headers at most; more: 431", env="CHUTES_MAX_HEADER_BYTES",
                flag="--max-header-bytes", default=_DEFAULTS.max_header_bytes, parse=int),
        Setting("max_headers", "request header fields at most; more: 431", env="CHUTES_MAX_HEADERS",
                flag="--max-headers", default=_DEFAULTS.max_headers, parse=int),
        Setting("max_request_line", "bytes of the request target at most; more: 414", env="CHUTES_MAX_REQUEST_LINE",
                flag="--max-request-line", default=_DEFAULTS.max_request_line, parse=int),
        Setting("header_timeout", "seconds from a connection's opening (or a request's first byte) to the end of "
                "its headers: 408, or closed when nothing came", env="CHUTES_HEADER_TIMEOUT",
                flag="--header-timeout", default=_DEFAULTS.header_timeout, parse=float, shown_default="15 s"),
        Setting("idle_timeout", "seconds an idle keep-alive connection stays open", env="CHUTES_IDLE_TIMEOUT",
                flag="--idle-timeout", default=_DEFAULTS.idle_timeout, parse=float, shown_default="75 s"),
        Setting("body_timeout", "seconds without a byte of an expected request body: 408",
                env="CHUTES_BODY_TIMEOUT", flag="--body-timeout", default=_DEFAULTS.body_timeout, parse=float,
                shown_default="60 s"),
        Setting("max_connections", "open client connections at most; past it the one idle longest is closed, "
                "and when every one is busy: 503 at once", env="CHUTES_MAX_CONNECTIONS", flag="--max-connections",
                default=_DEFAULTS.max_connections, parse=int,
                shown_default="10000 (at most half the descriptor limit in the gateway, 80% elsewhere)"),
    ],
)  # fmt: skip

#: environment variable of each limit (the same in every daemon)
ENV_VARS: dict[str, str] = SETTINGS.env_vars_by_name()


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
    for s in SETTINGS:
        group.add_argument(s.flag, dest=f"edge_{s.name}", default=None, help=s.help())


def from_args(args: argparse.Namespace, env: Mapping[str, str], defaults: EdgeLimits | None = None) -> EdgeLimits:
    """Flags over the environment over ``defaults``."""
    limits = from_env(env, defaults)
    changes: dict[str, Any] = {
        name: _convert(name, getattr(args, f"edge_{name}"))
        for name in ENV_VARS
        if getattr(args, f"edge_{name}", None) is not None
    }
    return dataclasses.replace(limits, **changes).validate()
