"""``chutes dev``'s supervision: dead parts restarted with doubling back-off and said so; ports kept per data dir."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from chutes.dev.process import Child
from chutes.dev.supervise import StablePorts, Supervisor, port_free
from tests.support.polling import poll_until


def test_a_dead_part_is_restarted_with_back_off_and_the_others_keep_running(tmp_path: Path) -> None:
    lines: list[str] = []
    flaky = Child("flaky", [sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "flaky.log")
    steady = Child("steady", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "steady.log")
    supervisor = Supervisor(lines.append, min_backoff=0.05, max_backoff=0.2, stable_after=60)
    for child in (flaky, steady):
        child.start()
        supervisor.watch(child)
    steady_pid = steady.pid
    try:

        def restarted_four_times() -> bool:
            supervisor.poll()
            return supervisor.restarts >= 4

        poll_until(restarted_four_times, "four restarts", 20, 0.01, retry_on=())
        exits = [line for line in lines if line.startswith("flaky exited (status 3)")]
        delays = [line.split("restarting it in ")[1].split("s,")[0] for line in exits]
        assert delays[:4] == ["0.05", "0.1", "0.2", "0.2"]  # doubling, capped
        assert any(line.startswith("flaky restarted (attempt 2") for line in lines)
        assert steady.exited() is None and steady.pid == steady_pid  # untouched
        assert not any(line.startswith("steady") for line in lines)
    finally:
        for child in (flaky, steady):
            child.stop(5)


def test_ports_of_a_data_dir_are_asked_for_again_unless_taken(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ports.json"
    first = StablePorts(path, echo=lambda _: None)
    assert first.ask("gateway") == 0  # nothing recorded yet: any free port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    first.record("gateway", free)
    notes: list[str] = []
    second = StablePorts(path, echo=notes.append)
    assert second.ask("gateway") == free
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free))
        holder.listen()
        assert not port_free(free)
        assert second.ask("gateway") == 0  # taken meanwhile: a new one, and the terminal says so
    assert notes and "taken" in notes[0]
