"""Secrets for a daemon from a file instead of its environment: ``CHUTES_ENV_FILE``.

Anything that runs as the same user can read a process's initial environment (``/proc/<pid>/environ``), for
its whole life. A daemon started with ``CHUTES_ENV_FILE=<path>`` reads ``KEY=VALUE`` lines from that file
(``#`` comments and blank lines ignored) into ``os.environ`` before it reads its settings: what is added to
``os.environ`` at run time never shows in ``/proc/<pid>/environ``, which keeps the values the kernel
recorded at ``exec``. The file must not be readable by group or others. ``chutes dev`` passes the admin key,
the gateway's key and the cluster tokens this way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import MutableMapping
from pathlib import Path

ENV_FILE_VAR = "CHUTES_ENV_FILE"


class EnvFileError(RuntimeError):
    """The file cannot be used; the message says why."""


def parse(text: str, source: str = "env file") -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or not key.replace("_", "").isalnum():
            raise EnvFileError(f"{source}, line {number}: expected KEY=VALUE")
        values[key] = value.strip()
    return values


def load(env: MutableMapping[str, str] | None = None, path: str | Path | None = None) -> list[str]:
    """Read the file named by ``CHUTES_ENV_FILE`` (or ``path``) into ``env`` (default ``os.environ``).

    Values already set in the environment win. Returns the names that were added.
    """
    target = os.environ if env is None else env
    where = path if path is not None else target.get(ENV_FILE_VAR)
    if not where:
        return []
    file = Path(where)
    try:
        mode = file.stat().st_mode
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvFileError(f"cannot read {ENV_FILE_VAR}={file}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise EnvFileError(f"{file} is readable by other users: chmod 600 {file}")
    added = []
    for key, value in parse(text, str(file)).items():
        if not target.get(key):
            target[key] = value
            added.append(key)
    return added
