"""``CHUTES_ENV_FILE``: secrets read from a private file, never visible in /proc/<pid>/environ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chutes.core import envfile


def _private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_values_are_added_and_the_environment_wins(tmp_path: Path) -> None:
    path = _private(tmp_path / "x.env", "# comment\nA_KEY=secret-a\n\nB=two=parts\nC=set\n")
    env = {envfile.ENV_FILE_VAR: str(path), "C": "kept"}
    assert envfile.load(env) == ["A_KEY", "B"]
    assert env["A_KEY"] == "secret-a" and env["B"] == "two=parts" and env["C"] == "kept"
    assert envfile.load({}) == []  # no file named: nothing to do


def test_a_file_others_can_read_or_a_bad_line_is_refused(tmp_path: Path) -> None:
    open_file = _private(tmp_path / "open.env", "A=1\n", 0o644)
    with pytest.raises(envfile.EnvFileError, match="chmod 600"):
        envfile.load({}, open_file)
    bad = _private(tmp_path / "bad.env", "just words\n")
    with pytest.raises(envfile.EnvFileError, match="line 1"):
        envfile.load({}, bad)
    with pytest.raises(envfile.EnvFileError, match="cannot read"):
        envfile.load({}, tmp_path / "missing.env")


def test_loaded_secrets_never_show_in_proc_environ(tmp_path: Path) -> None:
    path = _private(tmp_path / "s.env", "CHUTES_ADMIN_KEY=cnk_secret_from_file\n")
    code = (
        "import os\nfrom chutes.core import envfile\nenvfile.load()\n"
        "assert os.environ['CHUTES_ADMIN_KEY'] == 'cnk_secret_from_file'\n"
        "print(b'cnk_secret_from_file' in open('/proc/self/environ', 'rb').read())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")} | {"CHUTES_ENV_FILE": str(path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
