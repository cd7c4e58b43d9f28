"""Run ``chutes-agent run`` as a real subprocess for a test, and read what it publishes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any, TypeVar

from tests.support.polling import poll_until
from tests.support.processes import start

AGENT = shutil.which("chutes-agent", path=str(Path(sys.executable).parent)) or "chutes-agent"
# Short intervals so that the daemon's behaviour shows within seconds (TTL 2 s, heartbeat 0.5 s).
FAST = ["--heartbeat", "0.5", "--ttl", "2", "--kv-refresh", "1", "--probe-interval", "0.5", "--backoff-cap", "1"]
T = TypeVar("T")


class AgentProcess:
    def __init__(self, workdir: Path, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.ports_file = workdir / f"{name}.ports.json"
        self.log_path = workdir / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_", "CONSUL_"))}
        argv = [AGENT, "run", "--ports-file", str(self.ports_file), *args]
        self.child = start(name, argv, self.log_path, {**base, **(env or {})})
        assert self.child.proc is not None
        self.proc = self.child.proc
        self.ports: dict[str, Any] = poll_until(self._ports, "the agent's ports file", timeout=20)

    def _ports(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"chutes-agent exited with {self.proc.returncode}:\n{self.log()}")
        if not self.ports_file.exists():
            return None
        return json.loads(self.ports_file.read_text())  # type: ignore[no-any-return]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.child.log()

    def metrics(self) -> dict[str, float]:
        """The agent's Prometheus samples as ``{"name{labels}": value}``."""
        port = self.ports["metrics"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait for the exit status; SIGKILL the group if it hangs."""
        self.child.signal_group(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        self.child.stop(timeout)
        return self.proc.returncode

    def kill(self) -> None:
        self.child.kill()
