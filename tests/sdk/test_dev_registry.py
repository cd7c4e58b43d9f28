"""``chutes dev --builds``: the decision, and the local registry it starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from chutes.dev.registry import BuildsUnavailable, local_registry, plan_builds


def test_builds_follow_the_tools_installed() -> None:
    everything = plan_builds("auto", which=lambda tool: f"/usr/bin/{tool}")
    assert everything.enabled and everything.message.startswith("builds: on")
    missing = plan_builds("auto", which=lambda tool: None if tool == "buildah" else "/usr/bin/x")
    assert not missing.enabled and "buildah not found" in missing.message
    assert not plan_builds("off", which=lambda tool: "/usr/bin/x").enabled
    with pytest.raises(BuildsUnavailable) as refused:
        plan_builds("on", which=lambda tool: None)
    assert "--builds off" in refused.value.hint
    with pytest.raises(BuildsUnavailable):
        plan_builds("sometimes", which=lambda tool: None)  # type: ignore[arg-type]


@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry is not installed")
def test_the_local_registry_serves_on_loopback_and_stops(tmp_path: Path) -> None:
    with local_registry(tmp_path / "registry") as address:
        host, port = address.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        assert httpx.get(f"http://{address}/v2/", timeout=5).status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{address}/v2/", timeout=2)
