"""Keeping ``chutes dev`` up: parts restarted when they die, orphans reaped, addresses kept across restarts.

- ``Supervisor``: a part (the devcluster, an agent, the scheduler, the gateway) that exits is started again
  with the same command line (so on the same port), after a back-off that doubles while it keeps failing
  (1 s up to 30 s) and resets once it has run for a minute. The others keep running; the terminal says what
  died and when it is back.
- Orphans: ``chutes dev`` becomes the "child subreaper" of everything below it (Linux), so processes whose
  parent died are re-parented to it and reaped; when the devcluster dies, the tasks it ran (instances) are
  killed at once from its process table (its restart starts them again in their allocations).
- ``StablePorts``: the ports of a data directory are kept in ``run/ports.json`` and asked for again on the next
  start, so instances, agents, the CLI's config and Nomad's stored jobs keep pointing at live addresses.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from chutes.dev.process import Child

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def reap_orphans(known: Iterable[int]) -> list[int]:
    """Wait for every exited child of this process that is not one of ``known`` (adopted orphans)."""
    me, skip, reaped = os.getpid(), set(known), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and fields[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)
                reaped.append(int(entry.name))
    return reaped


@dataclass
class Watched:
    """A part and its restart state."""

    child: Child
    on_death: Callable[[], None] | None = None
    is_up: Callable[[], bool] | None = None
    failures: int = 0
    restart_at: float | None = None  # when a dead part is due to start again
    started_at: float = 0.0
    announced: bool = True  # its return was reported (or it never left)


@dataclass
class Supervisor:
    """Restarts parts that die, with back-off; ``poll`` does one round (call it a few times a second)."""

    echo: Callable[[str], None]
    min_backoff: float = 1.0
    max_backoff: float = 30.0
    stable_after: float = 60.0
    clock: Callable[[], float] = time.monotonic
    parts: list[Watched] = field(default_factory=list)
    restarts: int = 0

    def watch(
        self, child: Child, *, on_death: Callable[[], None] | None = None, is_up: Callable[[], bool] | None = None
    ) -> Watched:
        part = Watched(child, on_death, is_up, started_at=self.clock())
        self.parts.append(part)
        return part

    def poll(self) -> None:
        now = self.clock()
        for part in self.parts:
            child = part.child
            if part.restart_at is None:
                status = child.exited()
                if status is None:
                    if now - part.started_at >= self.stable_after:
                        part.failures = 0
                    if not part.announced and (part.is_up is None or _safe(part.is_up)):
                        part.announced = True
                        self.echo(f"{child.name} is back (pid {child.pid})")
                    continue
                part.failures += 1
                delay = min(self.max_backoff, self.min_backoff * 2 ** (part.failures - 1))
                part.restart_at = now + delay
                self.echo(f"{child.name} exited ({_status(status)}); restarting it in {delay:g}s, the rest keeps "
                          f"running (log: {child.log_path})")  # fmt: skip
                if part.on_death is not None:
                    with contextlib.suppress(Exception):
                        part.on_death()
            elif now >= part.restart_at:
                part.restart_at = None
                part.started_at = now
                part.announced = False
                try:
                    child.start()
                except OSError as exc:
                    self.echo(f"{child.name} could not be started: {exc}")
                    part.failures += 1
                    part.restart_at = now + min(self.max_backoff, self.min_backoff * 2**part.failures)
                    continue
                self.restarts += 1
                self.echo(f"{child.name} restarted (attempt {part.failures}, pid {child.pid})")
        reap_orphans(p.child.pid for p in self.parts if p.child.pid is not None)


def _status(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"status {code}"


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:
        return False


# -- ports


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound on ``host`` now (SO_REUSEADDR, as the daemons bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class StablePorts:
    """The ports a data directory's stack used last time (``run/ports.json``), handed out again if free."""

    NAMES = ("nomad", "consul", "scheduler", "gateway")

    def __init__(self, path: Path, echo: Callable[[str], None] = print) -> None:
        self.path = path
        self.echo = echo
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = {}
        self.previous = {k: int(v) for k, v in loaded.items() if k in self.NAMES and isinstance(v, int) and v > 0}
        self.chosen: dict[str, int] = {}

    def ask(self, name: str) -> int:
        """The port to ask for: last run's if it is free, else 0 (any; the caller records what it got)."""
        port = self.previous.get(name, 0)
        if port and not port_free(port):
            self.echo(f"  port {port} of the {name} is taken now: it gets a new one (chutes follow it)")
            return 0
        return port

    def record(self, name: str, port: int) -> None:
        """Remember the port ``name`` got, for the next start of the same data directory."""
        self.chosen[name] = port
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({**self.previous, **self.chosen}), encoding="utf-8")
        os.replace(tmp, self.path)
