"""Task events read as Nomad reports them: failing instances and when an instance stopped serving."""

from __future__ import annotations

from typing import Any

from chutes.scheduler import task_events

S = 1_000_000_000


def _alloc(*events: tuple[str, float, dict[str, Any]], restarts: int = 0) -> dict[str, Any]:
    return {
        "TaskStates": {
            "runtime": {
                "State": "pending",
                "Restarts": restarts,
                "Events": [{"Type": kind, "Time": int(at * S), **extra} for kind, at, extra in events],
            }
        }
    }


def test_a_crash_loop_is_failing_with_nomads_reason() -> None:
    alloc = _alloc(
        ("Started", 100, {}),
        ("Terminated", 101, {"ExitCode": 1, "Message": "Exit Code: 1"}),
        ("Restarting", 101, {"DisplayMessage": "Task restarting in 15s"}),
        ("Started", 116, {}),
        ("Terminated", 117, {"ExitCode": 1}),
        ("Restarting", 117, {"DisplayMessage": "Task restarting in 15s"}),
        restarts=2,
    )
    found = task_events.trouble(alloc, since=0)
    assert found is not None and found.at == 117 and found.restarts == 2
    assert found.message == "task runtime exited with code 1 after 2 restart(s); Task restarting in 15s"
    assert task_events.trouble(alloc, since=120) is None  # nothing failed after a later ready time


def test_stops_we_asked_for_and_devcluster_restarts_are_not_failures() -> None:
    stopped = _alloc(
        ("Started", 10, {}), ("Killing", 20, {}), ("Terminated", 20.5, {"ExitCode": 143}), ("Killed", 21, {})
    )
    assert task_events.trouble(stopped, since=0) is None
    restarted = _alloc(("Started", 10, {}), ("Restarting", 500, {"Message": "The devcluster restarted"}))
    assert task_events.trouble(restarted, since=0) is None
    gave_up = _alloc(("Not Restarting", 30, {"DisplayMessage": "Exceeded allowed attempts 3 in interval 1800s"}))
    found = task_events.trouble(gave_up, since=0)
    assert found is not None and "Exceeded allowed attempts" in found.message


def test_when_an_instance_stopped_serving() -> None:
    alloc = _alloc(
        ("Started", 10, {}), ("Killing", 40, {}), ("Killed", 41, {}), ("Restarting", 90, {}), ("Started", 91, {})
    )
    assert task_events.stopped_serving(alloc, since=20) == 40
    assert task_events.stopped_serving(alloc, since=95) is None
    assert task_events.last_started(alloc) == 91
