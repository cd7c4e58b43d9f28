"""Real runtimes for tests: uvicorn in a thread (same process) or ``python -m chutes.runtime`` in a subprocess.

Both listen on 127.0.0.1 port 0. In-process servers are fast and let a test look at the app's state; the
subprocess is for what needs a whole process: signals, exit codes, the command line, the environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
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
from tests.support.polling import poll_until
from tests.support.processes import TestProcess, running

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

    def listening() -> bool:
        if not thread.is_alive():
            raise RuntimeError("the runtime's thread ended before it listened")
        return bool(server.started and server.bound_port)

    poll_until(listening, "the runtime listening", 10, 0.01, retry_on=())
    try:
        yield InProcess(server, f"http://127.0.0.1:{server.bound_port}")
    finally:
        server.should_exit = True
        thread.join(15)


def wait_ready(url: str, timeout: float = 30) -> None:
    """Until ``url/_ready`` answers 200."""
    poll_until(
        lambda: httpx.get(f"{url}/_ready", timeout=5).status_code == 200,
        f"{url} ready",
        timeout,
        0.02,
        retry_on=(httpx.TransportError,),
    )


def signed(method: str, target: str, body: bytes = b"", secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(secret, method, target, body, timestamp=ts), "content-type": "application/json"}


@dataclass
class Process:
    child: TestProcess
    port_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port_file.read_text().strip()}"

    def log(self) -> str:
        return self.child.log()

    def wait_listening(self, timeout: float = 60) -> str:
        self.child.wait_port(self.port_file, timeout)
        return self.url

    def signal(self, sig: int) -> None:
        self.child.signal_group(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.child.proc is not None
        return self.child.proc.wait(timeout)


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
    with running("runtime", command, log_path, runtime_env(env), cwd=REPO, stop_timeout=0) as child:
        yield Process(child, port_file)
