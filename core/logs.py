"""The daemons' logging set-up: one line per record on stderr, in one format."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int, *, quiet: Iterable[str] = (), force: bool = False) -> None:
    """Log at ``level`` (a name such as ``"info"`` or a number) to stderr; the loggers in ``quiet`` log warnings
    and above only (libraries that write a line per request). ``force`` replaces handlers already installed."""
    resolved = level.upper() if isinstance(level, str) else level
    logging.basicConfig(level=resolved, format=FORMAT, stream=sys.stderr, force=force)
    for name in quiet:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
