"""Announcing a bound port: the file a parent process waits for (``--port-file``, ``--ports-file``)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_port_file(path: Path, ports: int | Mapping[str, Any]) -> None:
    """Write ``ports`` (one port as a line, several as a JSON object) so that a reader sees the whole file or
    none of it: written beside it, then renamed over it."""
    text = json.dumps(dict(ports)) if isinstance(ports, Mapping) else f"{int(ports)}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
