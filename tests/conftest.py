"""What every suite shares: an environment free of the developer's cluster settings, and a check at the end of
the session that no process a test started is still running."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from tests.support.processes import leftover_children

# py-consul lets CONSUL_HTTP_TOKEN override an explicit token, and python-nomad reads NOMAD_ADDR: keep the
# tests independent of the developer's environment (a test that wants a cluster starts its own devcluster).
for _var in ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_ADDR", "NOMAD_ADDR", "NOMAD_TOKEN", "NOMAD_NAMESPACE", "NOMAD_REGION"):
    os.environ.pop(_var, None)

#: Seconds a child stopped by the last teardown gets to finish exiting before it counts as left over.
_GRACE = 5.0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session (and kill them) when child processes of the tests are still running at its end."""
    deadline = time.monotonic() + _GRACE
    while (left := leftover_children()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not left:
        return
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    lines = "\n".join(f"  {pid}: {cmdline[:200]}" for pid, cmdline in left)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"child processes left running by the tests (now killed):\n{lines}"
    if reporter is not None:
        reporter.write_line(message, red=True)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
