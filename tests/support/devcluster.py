"""Start a real ``chutes-devcluster`` for a test (docs/internal-contracts.md, "Devcluster for tests").

    with devcluster(nodes=["gpu-a=h100_sxm:8"]) as dc:
        n = nomad.Nomad(host="127.0.0.1", port=dc.nomad_port)
        c = consul.Consul(host="127.0.0.1", port=dc.consul_port)
        ...
        dc.restart()  # same ports, same data dir: state survives, tasks are started again

The devcluster runs as a ``tests.support.processes.TestProcess`` (its own process group) on port 0; the handle
is yielded once its ports file exists. On exit its group gets SIGTERM (it stops every task it started) and, if
it does not exit in time, SIGKILL, and the task process groups it recorded are killed and its containers
removed too, so no test leaves processes or containers behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chutes.dev.containers import remove_leftovers
from chutes.devcluster.nomad.executor import ProcessTable
from tests.support.polling import poll_until
from tests.support.processes import TestProcess

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def _command() -> list[str]:
    script = shutil.which("chutes-devcluster", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "chutes.devcluster.cli"]


@dataclass
class DevclusterHandle:
    """A running devcluster: addresses, ports, data dir, and restart/stop controls."""

    data_dir: Path
    args: list[str]
    env: dict[str, str]
    log_path: Path
    nomad_port: int = 0
    consul_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _ports_file: Path = field(init=False)
    _killed: bool = field(default=False, init=False)  # killed and not started again: its tasks still run
    _child: TestProcess = field(init=False)

    def __post_init__(self) -> None:
        self._ports_file = self.data_dir.parent / f"{self.data_dir.name}.ports.json"

    @property
    def scheme(self) -> str:
        """``https`` when started with ``--tls-cert`` (see tests/support/tls.py for certificates)."""
        return "https" if "--tls-cert" in self.args else "http"

    @property
    def nomad_addr(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.nomad_port}"

    @property
    def consul_addr(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.consul_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def nomad(self, **kwargs: Any) -> Any:
        """A python-nomad client for this devcluster."""
        import nomad

        return nomad.Nomad(host="127.0.0.1", port=self.nomad_port, **{"timeout": 10, **kwargs})

    def consul(self, **kwargs: Any) -> Any:
        """A py-consul (sync) client for this devcluster."""
        import consul

        return consul.Consul(host="127.0.0.1", port=self.consul_port, **kwargs)

    def log(self) -> str:
        """The devcluster's stderr so far (for assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self._ports_file.unlink(missing_ok=True)
        self._killed = False  # the new process reaps what the killed one left
        cmd = [
            *_command(),
            "--nomad-port", str(self.nomad_port),
            "--consul-port", str(self.consul_port),
            "--ports-file", str(self._ports_file),
            "--data-dir", str(self.data_dir),
            *self.args,
        ]  # fmt: skip
        self._child = TestProcess("chutes-devcluster", cmd, self.log_path, self.env)
        self._child.start()
        self.proc = self._child.proc
        assert self.proc is not None

        def ports() -> dict[str, Any] | None:
            if self._child.exited() is not None:
                raise RuntimeError(f"chutes-devcluster exited with {self._child.exited()}:\n{self.log()[-4000:]}")
            value = json.loads(self._ports_file.read_text()) if self._ports_file.exists() else None
            return value if isinstance(value, dict) else None

        try:
            found = poll_until(ports, "chutes-devcluster's ports file", timeout_s, 0.02, retry_on=(ValueError, OSError))
        except AssertionError:
            self.stop()
            raise TimeoutError(
                f"chutes-devcluster did not write its ports within {timeout_s}s:\n{self.log()[-4000:]}"
            ) from None
        self.nomad_port, self.consul_port = int(found["nomad"]), int(found["consul"])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; SIGKILL the group (and reap its tasks) when it does not exit in time."""
        proc = self.proc
        if proc is None:
            if self._killed:  # a test that killed it and did not start it again: nothing may outlive the test
                remove_containers(self.data_dir)
                ProcessTable(self.data_dir / "tasks.json").reap_leftovers()
                self._killed = False
            return None
        self._child.stop(timeout_s)  # SIGTERM the group; SIGKILL when it does not exit in time
        if proc.returncode == -signal.SIGKILL:
            remove_containers(self.data_dir)
        ProcessTable(self.data_dir / "tasks.json").reap_leftovers()
        self.proc = None
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the devcluster alone (a crash): its tasks keep running until the next start reaps them."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # the process, not its group
            self.proc.wait()
            self._child.stop(0)  # closes its log (its tasks run in sessions of their own and keep running)
            self._killed = True
        self.proc = None

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Stop (SIGTERM) and start again on the same ports and data dir."""
        self.stop()
        self.start(timeout_s)


def remove_containers(data_dir: Path) -> int:
    """Remove the podman containers of the devcluster using ``data_dir`` (after it was killed); how many.
    What ``chutes dev`` does when it stops (``chutes.dev.containers.remove_leftovers``)."""
    return remove_leftovers(data_dir)


@contextlib.contextmanager
def devcluster(
    nodes: Sequence[str] = ("gpu-a=h100_sxm:8",),
    *,
    local_node: bool = True,
    data_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    nomad_token: str | None = None,
    consul_token: str | None = None,
    start_timeout_s: float = START_TIMEOUT_S,
) -> Iterator[DevclusterHandle]:
    """Run a devcluster with simulated ``nodes`` (``NAME=MODEL:COUNT``) for the duration of the block.

    The local node is added without probing NVML (deterministic tests); pass ``extra_args`` for more flags.
    """
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="devcluster-test-")))
            data_dir = base / "data"
        args = [arg for spec in nodes for arg in ("--node", spec)]
        if not local_node:
            args.append("--no-local-node")
        args += ["--no-gpu-probe", "--log-level", "info", *extra_args]
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_HTTP_"))}
        child_env.update(env or {})
        if nomad_token:
            child_env["CHUTES_DEVCLUSTER_NOMAD_TOKEN"] = nomad_token
        if consul_token:
            child_env["CHUTES_DEVCLUSTER_CONSUL_TOKEN"] = consul_token
        handle = DevclusterHandle(
            data_dir=data_dir, args=args, env=child_env, log_path=data_dir.parent / f"{data_dir.name}.log"
        )
        handle.start(start_timeout_s)
        try:
            yield handle
        finally:
            handle.stop()
