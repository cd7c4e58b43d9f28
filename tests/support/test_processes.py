"""The test process helper: a group stopped as one, a port read from a file, and the leftover check."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.processes import leftover_children, running, start

SLEEPER = [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"]


def test_a_running_process_and_its_group_are_gone_after_the_block(tmp_path: Path) -> None:
    with running("sleeper", SLEEPER, tmp_path / "log", stop_timeout=2) as proc:
        assert proc.alive() and proc.pid in [pid for pid, _ in leftover_children()]
    assert not proc.alive() and proc.pid not in [pid for pid, _ in leftover_children()]


def test_the_port_a_process_writes_is_read_and_an_early_exit_is_reported_with_its_log(tmp_path: Path) -> None:
    script = f"import pathlib, time; pathlib.Path({str(tmp_path / 'port')!r}).write_text('4321'); time.sleep(60)"
    with running("writer", [sys.executable, "-c", script], tmp_path / "log") as proc:
        assert proc.wait_port(tmp_path / "port", timeout=20) == 4321
    crash = start("crash", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path / "crash.log")
    with pytest.raises(AssertionError, match="boom"):
        crash.wait_port(tmp_path / "never", timeout=20)
    crash.kill()
    assert crash.exited() == 3
