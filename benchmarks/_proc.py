"""CPU time and memory of running processes, read from /proc (Linux), for the benchmarks that compare them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process so far; (0, 0) once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime: fields 14 and 15 of stat


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of one process so far."""
    user, system = cpu_times(pid)
    return user + system


def rss_mb(pid: int) -> float:
    """Resident memory of one process, in MB."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant still running."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return pids
