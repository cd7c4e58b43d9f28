"""Child processes of the dev stack: each in its own process group, logging to its own file, stopped as a group.

Every child also gets the kernel's parent-death signal (Linux ``PR_SET_PDEATHSIG``), so that even a
``kill -9`` of the supervisor leaves no daemon behind: the children get SIGTERM and stop their own children.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
# Not passed on from the caller's environment: what is named like a credential (the stack hands each child
# its own secrets through a 0600 file), so no /proc/<pid>/environ of the stack's processes holds one.
_CREDENTIAL_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY", "ADMIN_KEY", "GATEWAY_KEY")


def inherited_environment() -> dict[str, str]:
    """The caller's environment minus anything named like a credential."""
    return {k: v for k, v in os.environ.items() if not any(w in k.upper() for w in _CREDENTIAL_WORDS)}


class ChildFailed(RuntimeError):
    """A child process that exited, or did not become healthy in time; the message carries its log's tail."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def session_with_parent_death() -> None:  # pragma: no cover - runs in the child between fork and exec
    """``preexec_fn``: a new session (own process group), and SIGTERM when the parent dies (Linux)."""
    os.setsid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    #: ``env`` over the caller's environment (credentials left out); False: ``env`` is the whole environment
    inherit_env: bool = True
    cwd: Path | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            list(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**inherited_environment(), **self.env} if self.inherit_env else dict(self.env),
            preexec_fn=session_with_parent_death,
            close_fds=True,
            cwd=self.cwd,
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exited(self) -> int | None:
        """The exit status if the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ChildFailed:
        tail = self.tail()
        body = f"{self.name} {what}" + (f"; last lines of {self.log_path}:\n{tail}" if tail else "")
        return ChildFailed(body, hint=f"the full log is {self.log_path}")

    def signal_group(self, sig: int) -> None:
        if self.proc is None or (self.proc.poll() is not None and sig != signal.SIGKILL):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float) -> None:
        """SIGTERM the process group, wait up to ``timeout``, then SIGKILL the group."""
        if self.proc is None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        # Anything the child left in its group (a grandchild that ignored SIGTERM) goes too.
        self.signal_group(signal.SIGKILL)
        self._close_log()

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash) and reap the process."""
        if self.proc is None:
            return
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def wait_for(
    check: Callable[[], bool],
    *,
    what: str,
    child: Child,
    timeout: float,
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until it is true; raise ChildFailed if ``child`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        status = child.exited()
        if status is not None:
            raise child.failure(f"exited with status {status} before it was {what}")
        if time.monotonic() > deadline:
            raise child.failure(f"was not {what} after {timeout:.0f}s")
        time.sleep(interval)


def read_port_file(path: Path) -> dict[str, int] | int | None:
    """The port(s) a daemon wrote: a bare number, or a JSON object of named ports. None until written."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        ports = {str(k): int(v) for k, v in value.items() if isinstance(v, int)}
        if len(ports) == 1 and "port" in ports:
            return ports["port"]
        return ports or None
    return None
