"""Reading a Nomad allocation's task events (pure): is the instance failing, and when did it stop serving?

Nomad keeps the last events of each task (``TaskStates[task].Events``, times in UNIX nanoseconds). Two
questions the scheduler asks of them:

- ``trouble``: has the task failed since a given time (it exited non-zero without being told to stop, its
  driver or setup failed, or Nomad gave up restarting it)? Such an instance is reported ``failing`` with the
  reason, instead of looking like one that is still starting.
- ``stopped_serving``: the first time after a given moment that the task ended or was being restarted: an
  instance that was ready until then stopped being billable then, not when the scheduler noticed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_FAILURES = frozenset({"Driver Failure", "Setup Failure", "Failed Validation", "Not Restarting", "Task hook failed"})
_ENDINGS = frozenset({"Terminated", "Killing", "Killed", "Restarting", "Driver Failure", "Not Restarting"})
_NS = 1_000_000_000
# Task event times come from Nomad's clock, instance records from the scheduler's: allow this much skew.
CLOCK_SLACK_S = 2.0


@dataclass(frozen=True, slots=True)
class TaskTrouble:
    """Why an instance is failing."""

    at: float  # UNIX seconds of the failure
    message: str
    restarts: int


def _events(alloc: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    for name, state in (alloc.get("TaskStates") or {}).items():
        for event in (state or {}).get("Events") or []:
            yield str(name), state or {}, event


def _time(event: Mapping[str, Any]) -> float:
    try:
        return float(event.get("Time") or 0) / _NS
    except (TypeError, ValueError):
        return 0.0


def trouble(alloc: Mapping[str, Any], since: float) -> TaskTrouble | None:
    """The latest failure of a task of ``alloc`` after ``since`` (UNIX seconds), or None."""
    found: TaskTrouble | None = None
    for name, state in (alloc.get("TaskStates") or {}).items():
        events = list((state or {}).get("Events") or [])
        for i, event in enumerate(events):
            at = _time(event)
            if at <= since:
                continue
            kind = str(event.get("Type") or "")
            told_to_stop = any(str(e.get("Type")) in ("Killing", "Killed") for e in events[max(0, i - 2) : i])
            exit_code = int(event.get("ExitCode") or 0)
            if kind == "Terminated" and exit_code != 0 and not told_to_stop:
                sig = int(event.get("Signal") or 0)
                reason = f"task {name} exited with code {exit_code}" + (f" (signal {sig})" if sig else "")
            elif kind in _FAILURES:
                detail = event.get("DisplayMessage") or event.get("Message") or event.get("DriverError") or ""
                reason = f"task {name}: {kind}" + (f": {detail}" if detail and detail != kind else "")
            else:
                continue
            restarts = int((state or {}).get("Restarts") or 0)
            if found is None or at >= found.at:
                found = TaskTrouble(at, reason, restarts)
    if found is None:
        return None
    suffix = f" after {found.restarts} restart(s)" if found.restarts else ""
    next_step = _next_step(alloc, found.at)
    message = found.message + suffix + (f"; {next_step}" if next_step else "")
    return TaskTrouble(found.at, message, found.restarts)


def _next_step(alloc: Mapping[str, Any], after: float) -> str:
    """What Nomad does about it: the message of a restart or give-up event following the failure."""
    for _, _, event in _events(alloc):
        if _time(event) >= after and event.get("Type") in ("Restarting", "Not Restarting"):
            return str(event.get("DisplayMessage") or event.get("Message") or event.get("Type"))
    return ""


def stopped_serving(alloc: Mapping[str, Any], since: float) -> float | None:
    """The first time after ``since`` that a task of ``alloc`` ended or was restarted, or None."""
    times = [_time(e) for _, _, e in _events(alloc) if str(e.get("Type")) in _ENDINGS and _time(e) > since]
    return min(times) if times else None


def last_started(alloc: Mapping[str, Any]) -> float | None:
    """The latest ``Started`` event of any task (UNIX seconds), or None."""
    times = [_time(e) for _, _, e in _events(alloc) if e.get("Type") == "Started"]
    return max(times) if times else None
