"""Real runtimes for tests: uvicorn in a thread (same process) or ``python -m chutes.runtime`` in a subprocess.

Both listen on 127.0.0.1 port 0. In-process servers are fast and let a test look at the app's state; the
subprocess is for what needs a whole process: signals, exit codes, the command line, the environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from chutes.core.signing import SIGNATURE_HEADER, sign
from chutes.runtime.config import ServeConfig
from chutes.runtime.protocols import ChuteLike
from chutes.runtime.server import RuntimeServer, build_server

SECRET = "test-invoke-secret"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class InProcess:
    server: RuntimeServer
    url: str

    @property
    def app(self) -> Any:
        return self.server.app


@contextlib.contextmanager
def serve_in_thread(chute: ChuteLike, **overrides: Any) -> Iterator[InProcess]:
    """Serve ``chute`` with uvicorn in a daemon thread; ``dev=True`` unless an ``invoke_secret`` is given."""
    overrides.setdefault("dev", "invoke_secret" not in overrides)
    config = dataclasses.replace(ServeConfig(port=0), **overrides)
    server = build_server(chute, config)
    thread = threading.Thread(target=server.run, name="runtime-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not (server.started and server.bound_port):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the runtime did not start listening")
        time.sleep(0.01)
    try:
        yield InProcess(server, f"http://127.0.0.1:{server.bound_port}")
    finally:
        server.should_exit = True
        thread.join(15)


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/_ready", timeout=5).status_code == 200:
                return
        time.sleep(0.02)
    raise AssertionError(f"{url} never became ready")


def signed(method: str, target: str, body: bytes = b"", secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(secret, method, target, body, timestamp=ts), "content-type": "application/json"}


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log_path: Path
    port_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port_file.read_text().strip()}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port_file.exists() and self.port_file.read_text().strip():
                return self.url
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"runtime did not listen within {timeout} s:\n{self.log()}")

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)


def runtime_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@contextlib.contextmanager
def run_process(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Process]:
    """``python -m chutes.runtime ARGS --port-file ...`` in its own process group, killed at the end."""
    log_path = tmp_path / f"runtime-{time.monotonic_ns()}.log"
    port_file = tmp_path / f"port-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "chutes.runtime", *args, "--port-file", str(port_file)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=runtime_env(env), cwd=REPO, start_new_session=True
        )
    try:
        yield Process(proc, log_path, port_file)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
