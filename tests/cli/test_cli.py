"""The installed ``chutes`` command: errors as one line plus a hint, ``--debug``, ``--json`` on read commands."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Scheduler

pytestmark = pytest.mark.timeout(60)
CHUTES = str(Path(sys.executable).parent / "chutes")


def run(
    *args: str, env: dict[str, str] | None = None, config: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    base["CHUTES_CONFIG"] = str(config or "/nonexistent/chutes-config.ini")
    base["COLUMNS"] = "200"
    return subprocess.run(
        [CHUTES, *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=30, input=stdin or ""
    )


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_missing_configuration_is_one_line_and_a_hint() -> None:
    result = run("chutes", "list")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: no API URL configured",
        "Hint: start a local stack with `chutes dev`, or pass --api-url / set CHUTES_SCHEDULER_URL",
    ]
    assert "Traceback" not in result.stderr + result.stdout


def test_unreachable_server_without_and_with_debug() -> None:
    url = _refused_url()
    result = run("nodes", "--api-url", url, "--api-key", "cnk_x")
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: cannot reach {url}")
    assert "Traceback" not in result.stderr
    debug = run("--debug", "nodes", "--api-url", url, "--api-key", "cnk_x")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "ChutesConnectionError" in debug.stderr


def test_bad_chute_reference_is_a_readable_error(tmp_path: Path) -> None:
    result = run("deploy", str(tmp_path / "nope.py:chute"), "--api-url", "http://127.0.0.1:9", "--api-key", "k")
    assert result.returncode == 1
    assert "Error: no such file" in result.stderr and "Hint:" in result.stderr


def test_read_commands_print_json(scheduler: Scheduler, tmp_path: Path) -> None:
    key = scheduler.new_user("cli-dana")
    env = {"CHUTES_SCHEDULER_URL": scheduler.url, "CHUTES_API_KEY": key}
    me = run("whoami", "--json", env=env)
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["username"] == "cli-dana"
    chutes = run("chutes", "list", "--json", env=env)
    assert chutes.returncode == 0, chutes.stderr
    assert json.loads(chutes.stdout) == []
    created = json.loads(run("keys", "create", "--name", "ci", "--json", env=env).stdout)
    key_id = created["key_id"]
    listed = json.loads(run("keys", "list", "--json", env=env).stdout)
    assert key_id in {k["key_id"] for k in listed}
    table = run("keys", "list", env=env)
    assert key_id in table.stdout and " ci " in table.stdout
    assert created["api_key"] not in table.stdout and key not in table.stdout, "a key listing showed a secret"
    assert run("keys", "delete", key_id, env=env).returncode == 0
    missing = run("chutes", "get", "nothing-here", env=env)
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error:") and "404" in missing.stderr and "Hint:" in missing.stderr


def test_config_file_is_used_and_flags_override_it(scheduler: Scheduler, tmp_path: Path) -> None:
    key = scheduler.new_user("cli-erin")
    config = tmp_path / "config.ini"
    config.write_text(f"[api]\nurl = {scheduler.url}\nkey = {key}\n")
    assert json.loads(run("whoami", "--json", config=config).stdout)["username"] == "cli-erin"
    other = run("whoami", "--api-key", "cnk_wrong", config=config)
    assert other.returncode == 1 and "401" in other.stderr
