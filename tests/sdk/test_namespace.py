"""The SDK package carries only what users import: loading it pulls in no server package and only the shared
core's user-facing parts (the hinted error base, settings and the module registry the CLI uses)."""

from __future__ import annotations

import json
import subprocess
import sys

USER_IMPORTS = "import chutes, chutes.client, chutes.chute, chutes.image, chutes.cli, chutes.gpus, chutes.manifest"
SERVER_PACKAGES = ("runtime", "agent", "scheduler", "gateway", "devcluster")
CORE_FOR_USERS = {"chutes.core", "chutes.core.errors", "chutes.core.settings", "chutes.core.registry"}


def _loaded_after(statement: str) -> list[str]:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('chutes'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_user_imports_load_no_server_package() -> None:
    loaded = _loaded_after(USER_IMPORTS)
    assert "chutes.client" in loaded and "chutes.chute" in loaded  # the probe saw the SDK itself
    servers = [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in SERVER_PACKAGES]
    assert servers == [], f"the SDK pulled in server code: {servers}"


def test_user_imports_load_only_the_user_facing_core() -> None:
    core = {m for m in _loaded_after(USER_IMPORTS) if m == "chutes.core" or m.startswith("chutes.core.")}
    assert core <= CORE_FOR_USERS, f"server internals loaded by the SDK: {sorted(core - CORE_FOR_USERS)}"
