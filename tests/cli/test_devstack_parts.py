"""Pieces of ``chutes dev``: node specs, the process supervisor (process groups, no orphans), port files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chutes.dev.nodes import DEFAULT_NODES, NodeSpec, NodeSpecError, merge, parse_node
from chutes.dev.process import Child, ChildFailed, read_port_file, wait_for
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(60)


def test_parse_node() -> None:
    assert parse_node("gpu-a=H100_SXM:2") == NodeSpec("gpu-a", "h100_sxm", 2)
    assert parse_node("gpu-a=h100_sxm:2").flag() == "gpu-a=h100_sxm:2"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gpu-a", "invalid node"),
        ("gpu-a=h100", "invalid node"),
        ("Bad Name=h100:1", "invalid node name"),
        ("gpu-a=v100x:1", "unknown GPU model"),
        ("gpu-a=h100:zero", "invalid GPU count"),
        ("gpu-a=h100:9", "1-8"),
    ],
)
def test_parse_node_rejects(value: str, message: str) -> None:
    with pytest.raises(NodeSpecError) as info:
        parse_node(value)
    assert message in str(info.value)
    assert info.value.hint


def test_merge_replaces_by_name_and_adds() -> None:
    merged = merge(DEFAULT_NODES, [NodeSpec("gpu-a", "a100", 4), NodeSpec("gpu-z", "l4", 1)])
    assert [n.name for n in merged] == ["gpu-a", "gpu-b", "gpu-z"]
    assert merged[0].model == "a100"


def test_default_nodes_fit_the_hello_example() -> None:
    from chutes.loader import load_chute

    selector = load_chute("examples/hello.py:chute").chute.node_selector
    assert any(node.model in selector.eligible_gpus for node in DEFAULT_NODES)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_stop_takes_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    # A child that starts a grandchild which ignores SIGTERM: only the group SIGKILL ends it.
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(600)\n"
    )
    child = Child("test", [sys.executable, "-c", script], tmp_path / "logs" / "test.log")
    child.start()
    assert child.pid is not None
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", what="started", child=child, timeout=20)
    grandchild = int(pid_file.read_text())
    assert os.getpgid(child.pid) == child.pid, "each child leads its own process group"
    assert os.getpgid(grandchild) == child.pid
    started = time.monotonic()
    child.stop(timeout=1.0)
    assert time.monotonic() - started < 10
    assert not _alive(child.pid)
    poll_until(lambda: not _alive(grandchild), "the grandchild gone", 5, 0.05)


def test_parent_death_signal_stops_children_of_a_killed_supervisor(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    supervisor = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from chutes.dev.process import Child\n"
        "argv = [sys.executable, '-c', 'import time; time.sleep(600)']\n"
        f"c = Child('sleeper', argv, Path({str(tmp_path)!r}) / 'l.log')\n"
        "c.start()\n"
        f"Path({str(pid_file)!r}).write_text(str(c.pid))\n"
        "time.sleep(600)\n"
    )
    log = tmp_path / "supervisor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", supervisor], stdout=out, stderr=subprocess.STDOUT)
    try:

        def started() -> bool:
            assert proc.poll() is None, f"the supervisor exited early:\n{log.read_text()}"
            return pid_file.exists() and bool(pid_file.read_text())

        poll_until(started, "the supervisor's child started", 30, 0.05, retry_on=(OSError,))
        child_pid = int(pid_file.read_text())
        assert _alive(child_pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        poll_until(lambda: not _alive(child_pid), "the child of the killed supervisor gone", 5, 0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_wait_for_reports_an_exited_child_with_its_log(tmp_path: Path) -> None:
    child = Child("broken", [sys.executable, "-c", "print('cannot bind: port taken'); raise SystemExit(3)"],
                  tmp_path / "broken.log")  # fmt: skip
    child.start()
    with pytest.raises(ChildFailed) as info:
        wait_for(lambda: False, what="healthy", child=child, timeout=20)
    assert "exited with status 3" in str(info.value)
    assert "cannot bind: port taken" in str(info.value)
    child.stop(1)


def test_read_port_file(tmp_path: Path) -> None:
    path = tmp_path / "ports"
    assert read_port_file(path) is None
    path.write_text("")
    assert read_port_file(path) is None
    path.write_text("8123\n")
    assert read_port_file(path) == 8123
    path.write_text('{"nomad": 1, "consul": 2}')
    assert read_port_file(path) == {"nomad": 1, "consul": 2}


def test_one_stack_per_data_directory(tmp_path: Path) -> None:
    from chutes.dev.stack import DevStack, DevStackError

    first = DevStack(data_dir=tmp_path, echo=lambda _: None)
    first._lock()
    second = DevStack(data_dir=tmp_path, echo=lambda _: None)
    with pytest.raises(DevStackError) as info:
        second._lock()
    assert "another `chutes dev`" in str(info.value)
    first.stop()  # releases the lock; the data directory stays (it was given)
    second._lock()
    second.stop()
    assert tmp_path.exists()
