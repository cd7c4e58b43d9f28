"""The processes tests start: each a :class:`chutes.dev.process.Child` (the one ``chutes dev`` uses), so each
runs in its own process group with the kernel's parent-death signal, logs to a file and is stopped as a group.

The kernel sends the parent-death signal when the *thread* that started the process ends: start processes from
the main thread, or from a thread that outlives them (an event loop's executor does until the loop closes).

``leftover_children`` is what the root conftest checks when the session ends: no process a test started may
outlive it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from chutes.dev.process import Child, read_port_file
from tests.support.polling import poll_until


@dataclass
class TestProcess(Child):
    """A :class:`Child` whose ``env`` is its whole environment (tests pass ``{**os.environ, ...}`` or less)."""

    __test__ = False  # not a test class, whatever pytest makes of its name
    inherit_env: bool = False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL it after ``timeout`` seconds."""
        super().stop(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, limit: int | None = None) -> str:
        """The log (stdout and stderr), its last ``limit`` characters if given."""
        return _tail(self.log_path, limit)

    def wait_port(self, path: Path, timeout: float = 30.0) -> int:
        """The port the process wrote to ``path`` (a bare number); fails with the log if it exits first."""

        def port() -> int | None:
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.exited()}):\n{self.log(4000)}")
            value = read_port_file(path)
            return value if isinstance(value, int) else None

        return poll_until(port, f"{self.name} to write {path}", timeout, 0.05, retry_on=(OSError,))


def wait_written(path: Path, proc: subprocess.Popen[bytes], what: str, timeout: float, log: Path) -> None:
    """Until ``path`` exists (a ready or ports file); fails at once, with ``log``, when ``proc`` exits first."""

    def written() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited ({proc.returncode}):\n{_tail(log)}")
        return path.exists()

    poll_until(written, what, timeout, 0.2, retry_on=())


def terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM ``proc`` if it still runs, SIGKILL it after ``grace`` seconds (for a process that stops its own
    children on SIGTERM, such as ``chutes dev``: a :class:`TestProcess` signals its whole group instead)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, limit: int | None = 6000) -> str:
    """The end of a log (all of it with ``limit=None``); empty while it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-limit:] if limit else text


def start(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | None = None,
) -> TestProcess:
    """Start ``argv`` (environment: ``env``, default this process's) logging to ``log_path``."""
    proc = TestProcess(name, list(argv), log_path, dict(os.environ if env is None else env), cwd=cwd)
    proc.start()
    return proc


@contextlib.contextmanager
def running(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | None = None,
    stop_timeout: float = 10.0,
) -> Iterator[TestProcess]:
    """:func:`start`, then stop the process group (SIGTERM, SIGKILL after ``stop_timeout``) on the way out."""
    proc = start(name, argv, log_path, env, cwd=cwd)
    try:
        yield proc
    finally:
        proc.stop(stop_timeout)


@dataclass(frozen=True)
class ProcEntry:
    """One process as /proc shows it."""

    pid: int
    ppid: int
    state: str  # "R", "S", ..., "Z" for a zombie

    def cmdline(self) -> str:
        try:
            raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return ""
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()

    def environ(self) -> bytes:
        try:
            return Path(f"/proc/{self.pid}/environ").read_bytes()
        except OSError:
            return b""


def process_table() -> list[ProcEntry]:
    """Every process of the machine (those that ended while it was read left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        found.append(ProcEntry(int(entry.name), int(ppid), state))
    return found


def children(parent: int) -> dict[int, str]:
    """pid → command line of every process whose parent is ``parent`` (zombies included)."""
    return {p.pid: p.cmdline() for p in process_table() if p.ppid == parent}


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, whatever session or group it moved to."""
    below: dict[int, list[int]] = {}
    for p in process_table():
        below.setdefault(p.ppid, []).append(p.pid)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in below.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def processes_mentioning(text: str) -> list[int]:
    """Live processes (not zombies, not this one) whose command line or environment contains ``text``."""
    me = os.getpid()
    return [
        p.pid
        for p in process_table()
        if p.pid != me and p.state != "Z" and (text in p.cmdline() or text.encode() in p.environ())
    ]


def leftover_children(parent: int | None = None) -> list[tuple[int, str]]:
    """(pid, command line) of the live (not zombie) child processes of ``parent`` (default: this process),
    leaving out the helpers Python itself starts (multiprocessing's resource tracker)."""
    parent = os.getpid() if parent is None else parent
    live = [(p.pid, p.cmdline()) for p in process_table() if p.ppid == parent and p.state != "Z"]
    return [(pid, cmdline) for pid, cmdline in live if "multiprocessing" not in cmdline]
