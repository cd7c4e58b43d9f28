"""``chutes dev`` as a user runs it, for the control plane's promises (issue 15), in file order on one stack:

1. Access changes made through the CLI reach the gateway within a second: share, unshare, a deleted key; a
   key deleted just before the scheduler stops stays refused.
2. ``chutes usage`` shows a running instance's GPU seconds growing, priced at its GPU model (L4).
3. kill -9 of each part (gateway, scheduler, an agent, the devcluster) under a loop of calls: the part comes
   back, the loop recovers, and no usage record is lost or counted twice.
4. Stop and restart ``chutes dev --data-dir``: the chute answers again within seconds, without a redeploy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.polling import poll_until
from tests.support.processes import TestProcess, children

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
CHUTES = str(Path(sys.executable).parent / "chutes")
L4_HOURLY = Decimal("0.25")


@dataclass
class Dev:
    """``chutes dev --data-dir`` in the background, and the CLI pointed at it."""

    tmp: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    child: TestProcess | None = None
    info: dict[str, Any] = field(default_factory=dict)
    starts: int = 0

    @property
    def ready_file(self) -> Path:
        return self.tmp / "ready.json"

    @property
    def log_path(self) -> Path:
        return self.tmp / f"dev-{self.starts}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> float:
        """Start and wait until up; returns the seconds it took."""
        self.starts += 1
        self.ready_file.unlink(missing_ok=True)
        began = time.monotonic()
        argv = [CHUTES, "dev", "--simulate", "--builds", "off", "--data-dir", str(self.tmp / "data")]
        argv += ["--ready-file", str(self.ready_file)]
        self.log_path.unlink(missing_ok=True)
        self.child = TestProcess("chutes dev", argv, self.log_path, self.env, cwd=ROOT)
        self.child.start()
        self.proc = self.child.proc

        def up() -> bool:
            assert self.child.alive(), self.log()
            return self.ready_file.exists()

        poll_until(up, f"chutes dev up (log: {self.log_path})", 150, 0.2, retry_on=())
        self.info = json.loads(self.ready_file.read_text())
        return time.monotonic() - began

    def stop(self) -> None:
        if self.child is None or self.child.exited() is not None:
            return
        self.child.stop(60)  # SIGTERM (its parts run in groups of their own), SIGKILL after 60 s
        if self.child.exited() == -signal.SIGKILL:
            pytest.fail("chutes dev did not stop within 60 s of SIGTERM")

    def part(self, needle: str) -> int:
        """The pid of the part whose command line contains ``needle``."""
        assert self.proc is not None
        matches = [pid for pid, cmd in children(self.proc.pid).items() if needle in cmd]
        assert len(matches) == 1, (needle, children(self.proc.pid))
        return matches[0]

    def cli(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [CHUTES, *args, *(["--api-key", key] if key else [])]
        done = subprocess.run(argv, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"chutes {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def admin_key(self) -> str:
        return str(json.loads((self.tmp / "data" / "secrets.json").read_text())["admin_key"])

    def url(self, path: str) -> str:
        return f"{self.info['gateway_url']}/demo/hello{path}"


def call(dev: Dev, key: str, name: str = "x", timeout: float = 30) -> httpx.Response:
    return httpx.post(dev.url("/hello"), json={"name": name}, headers={"Authorization": f"Bearer {key}"},
                      timeout=timeout)  # fmt: skip


def json_values(text: str) -> list[Any]:
    """Every JSON value printed one after another (``--json`` streams print one indented value per item)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


def until(check: Callable[[], bool], what: str, timeout: float, interval: float = 0.01) -> float:
    """Seconds until ``check`` holds (fails past ``timeout``)."""
    start = time.monotonic()
    poll_until(check, what, timeout, interval, retry_on=())
    return time.monotonic() - start


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("dev-control")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_", "CONSUL_HTTP_"))}
    env.update(CHUTES_CONFIG=str(tmp / "config.ini"), COLUMNS="200")
    stack = Dev(tmp, env)
    stack.start()
    try:
        deployed = stack.cli("deploy", "examples/hello.py:chute", "--timeout", "120")
        assert "ready" in deployed.stdout.lower()
        yield stack
    finally:
        stack.stop()


def test_access_changes_reach_the_gateway_within_a_second(dev: Dev) -> None:
    admin = dev.admin_key()
    bob = json.loads(dev.cli("users", "create", "bob", "--json", key=admin).stdout)["api_key"]
    assert call(dev, bob).status_code == 404  # not shared with bob (and the gateway caches that answer)

    dev.cli("chutes", "share", "hello", "bob")
    shared = until(lambda: call(dev, bob).status_code == 200, "bob's call to succeed", 1.0)
    dev.cli("chutes", "share", "hello", "bob", "--remove")
    unshared = until(lambda: call(dev, bob).status_code == 404, "bob's call to be refused", 1.0)

    spare = json.loads(dev.cli("keys", "create", "--name", "spare", "--json").stdout)
    assert call(dev, spare["api_key"]).status_code == 200
    dev.cli("keys", "delete", spare["key_id"])
    revoked = until(lambda: call(dev, spare["api_key"]).status_code == 401, "the deleted key refused", 1.0)

    # A key deleted just before the scheduler stops: refused all the same (the scheduler cannot be asked).
    last = json.loads(dev.cli("keys", "create", "--name", "last", "--json").stdout)
    assert call(dev, last["api_key"]).status_code == 200
    assert call(dev, dev.info["api_key"]).status_code == 200  # the owner's key, cached by the gateway
    dev.cli("keys", "delete", last["key_id"])
    scheduler = dev.part("chutes-scheduler")
    os.kill(scheduler, signal.SIGSTOP)
    try:
        stopped = until(lambda: call(dev, last["api_key"], timeout=5).status_code == 401, "refused, scheduler down", 1)
        assert call(dev, dev.info["api_key"]).status_code == 200  # while a valid key still works (stale-if-error)
    finally:
        os.kill(scheduler, signal.SIGCONT)
    print(f"\nchange -> effect at the gateway: share {shared:.3f}s, unshare {unshared:.3f}s, "
          f"key deleted {revoked:.3f}s, key deleted then scheduler stopped {stopped:.3f}s")  # fmt: skip


def test_usage_shows_a_running_instance_growing_at_its_gpu_price(dev: Dev) -> None:
    def line() -> tuple[dict[str, Any], Decimal]:
        answer = json.loads(dev.cli("usage", "--chute", "hello", "--json").stdout)
        (found,) = [ln for ln in answer["lines"] if ln["chute_name"] == "hello" and Decimal(ln["gpu_seconds"]) > 0]
        return dict(found), Decimal(str(answer["as_of"]))

    first, first_at = line()
    time.sleep(1)
    second, second_at = line()
    assert first["running_instances"] == 1 and second["running_instances"] == 1
    assert first["gpu_models"] == ["l4"]  # hello lands on the L4 node (cheapest)
    grown = Decimal(second["gpu_seconds"]) - Decimal(first["gpu_seconds"])
    assert grown >= 1
    assert abs(grown - (second_at - first_at)) <= Decimal("0.002")  # one GPU, counted up to each answer's as_of
    expected = (Decimal(second["gpu_seconds"]) * L4_HOURLY / 3600).quantize(Decimal("0.01"))
    assert abs(Decimal(second["cost_usd"]) - expected) <= Decimal("0.01")
    table = dev.cli("usage", "--chute", "hello").stdout
    assert "(running)" in table and "still running" in table


class Loop:
    """Two threads calling hello back to back; every answer's status and invocation id is kept."""

    def __init__(self, dev: Dev, key: str) -> None:
        self.dev, self.key = dev, key
        self.answers: list[tuple[float, int, str | None]] = []
        self.errors: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self.key}"}, timeout=90) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    resp = http.post(self.dev.url("/hello"), json={"name": f"n{n}"})
                    self.answers.append(
                        (time.monotonic(), resp.status_code, resp.headers.get("x-chutes-invocation-id"))
                    )
                except httpx.HTTPError as exc:
                    self.errors.append((time.monotonic(), repr(exc)))
                    time.sleep(0.05)

    def ok_since(self, since: float) -> int:
        return sum(1 for t, status, _ in self.answers if t >= since and status == 200)

    def __enter__(self) -> Loop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(100)


def test_kill_9_of_each_part_under_load_loses_and_doubles_no_usage_record(dev: Dev) -> None:
    admin = dev.admin_key()
    carol = json.loads(dev.cli("users", "create", "carol", "--json", key=admin).stdout)["api_key"]
    dev.cli("chutes", "share", "hello", "carol")
    first = call(dev, carol)  # the share took effect when the CLI returned: no wait needed
    assert first.status_code == 200, first.text
    warm_up = [first.headers["x-chutes-invocation-id"]]
    recoveries: dict[str, str] = {}
    with Loop(dev, carol) as loop:
        until(lambda: loop.ok_since(0) >= 10, "the loop running", 30)
        for name, needle in (
            ("gateway", "chutes-gateway"),
            ("scheduler", "chutes-scheduler"),
            ("agent-gpu-a", "--node-id gpu-a"),
            ("devcluster", "chutes-devcluster"),
        ):
            pid = dev.part(needle)
            tasks = [p for p, cmd in children(pid).items() if "chutes.runtime" in cmd]  # the devcluster's instances
            assert tasks or name != "devcluster"
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            # Orphans are reaped at once: a dead devcluster's instances are killed and waited for, not left behind.
            until(lambda tasks=tasks: not any(Path(f"/proc/{t}").exists() for t in tasks), "orphans reaped", 5)  # type: ignore[misc]
            back = until(lambda name=name: f"{name} is back" in dev.log(), f"{name} back", 90, 0.1)  # type: ignore[misc]
            assert dev.part(needle) != pid
            until(lambda k=killed: loop.ok_since(k) >= 5, f"calls after killing {name}", 90, 0.05)  # type: ignore[misc]
            failed = [t for t, status, _ in loop.answers if t >= killed and status != 200]
            failed += [t for t, _ in loop.errors if t >= killed]
            last_failure = max(failed, default=killed) - killed
            recoveries[name] = f"back {back:.1f}s, calls failing for {last_failure:.1f}s ({len(failed)} failed)"
    answered = warm_up + [inv for _, _, inv in loop.answers if inv]
    assert len(answered) == len(set(answered)) and len(answered) > 50
    statuses = {status for _, status, _ in loop.answers}
    assert 200 in statuses

    def metered() -> int:
        answer = json.loads(dev.cli("usage", "--json", key=carol).stdout)  # carol only called hello
        return sum(int(ln["invocations"]) for ln in answer["lines"])

    until(lambda: metered() >= len(answered), "every answered call metered", 60, 0.5)
    time.sleep(2)  # anything replayed twice would show up now
    assert metered() == len(answered)  # none lost, none counted twice
    print(f"\nkill -9: {'; '.join(f'{k}: {v}' for k, v in recoveries.items())}; "
          f"{len(answered)} calls answered and metered, {len(loop.errors)} connection errors")  # fmt: skip


def test_a_restart_with_the_same_data_dir_answers_without_a_redeploy(dev: Dev) -> None:
    before = json.loads(dev.cli("chutes", "get", "hello", "--json").stdout)
    urls = (dev.info["api_url"], dev.info["gateway_url"])
    dev.stop()
    up = dev.start()
    assert (dev.info["api_url"], dev.info["gateway_url"]) == urls  # the same addresses: the config still works
    key = dev.info["api_key"]
    began = time.monotonic()
    until(lambda: call(dev, key, timeout=10).status_code == 200, "hello answering after the restart", 60, 0.2)
    answered = time.monotonic() - began
    after = json.loads(dev.cli("chutes", "get", "hello", "--json").stdout)
    assert after["version"] == before["version"]
    events = json_values(dev.cli("chutes", "events", "hello", "--json").stdout)
    kinds = [e.get("type") for e in events]
    assert kinds.count("accepted") == 1, kinds  # no redeploy
    assert not any("reconciler registered" in str(e.get("message")) for e in events), events
    print(f"\nrestart: the stack was up in {up:.1f}s; hello answered {answered:.1f}s later, without a redeploy")
    assert answered < 30
