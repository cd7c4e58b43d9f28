"""``chutes dev --containers auto|on|off``: the decision, and the settings it hands to the scheduler."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from chutes.dev.containers import HOST_ALIAS, ContainersUnavailable, plan_containers, podman_probe
from tests.support.containers import require_containers


def _which(found: set[str]) -> Callable[[str], str | None]:
    return lambda tool: f"/usr/bin/{tool}" if tool in found else None


def _works(_podman: str) -> str | None:
    return None


RLIMITS = "Error: runc: error setting rlimits for ready process: error setting rlimit type 7: operation not permitted"


def _fails(_podman: str) -> str | None:
    return RLIMITS


def test_auto_turns_containers_on_with_podman_and_buildah() -> None:
    plan = plan_containers("auto", which=_which({"podman", "buildah"}), version=lambda _: "4.3.1", probe=_works)
    assert plan.enabled and "containers: on (podman 4.3.1)" in plan.message
    assert plan.devcluster_args() == ["--docker-driver", "on"]
    scheduler = plan.scheduler_env()
    assert scheduler == {"CHUTES_CONTAINER_SCHEDULER_HOST": HOST_ALIAS}  # settings only: tokens go by env file
    # Containers or not, the devcluster's APIs are closed by its ACLs (tests/e2e/test_dev_isolation.py): the
    # plan carries no tokens of its own.
    assert not hasattr(plan, "nomad_token") and not hasattr(plan, "client_env")


@pytest.mark.parametrize(
    ("found", "version", "why"),
    [
        (set(), "4.3.1", "podman and buildah not found"),
        ({"podman"}, "4.3.1", "buildah not found"),
        ({"podman", "buildah"}, None, "podman does not work"),
    ],
)
def test_auto_falls_back_to_processes_and_says_why(found: set[str], version: str | None, why: str) -> None:
    plan = plan_containers("auto", which=_which(found), version=lambda _: version, probe=_works)
    assert not plan.enabled and why in plan.message and "raw_exec" in plan.message
    assert plan.devcluster_args() == ["--docker-driver", "off"]
    # No docker driver: the scheduler must not render docker tasks, whatever was built.
    assert plan.scheduler_env() == {"CHUTES_TASK_DRIVER": "raw_exec"}
    with pytest.raises(ContainersUnavailable, match=why) as info:
        plan_containers("on", which=_which(found), version=lambda _: version, probe=_works)
    assert "--containers off" in info.value.hint


def test_off_is_off_even_with_podman() -> None:
    plan = plan_containers("off", which=_which({"podman", "buildah"}), version=lambda _: "4.3.1", probe=_fails)
    assert not plan.enabled and "--containers off" in plan.message
    with pytest.raises(ContainersUnavailable, match="not a mode"):
        plan_containers("sometimes")


def test_a_podman_that_cannot_start_a_container_turns_auto_off_with_the_fix() -> None:
    """podman answers `podman version` but refuses to start containers (these VMs without CONTAINERS_CONF):
    auto falls back to processes and says what to set; on refuses to start."""
    plan = plan_containers("auto", which=_which({"podman", "buildah"}), version=lambda _: "4.3.1", probe=_fails)
    assert not plan.enabled and plan.scheduler_env() == {"CHUTES_TASK_DRIVER": "raw_exec"}
    assert RLIMITS in plan.message and "CONTAINERS_CONF" in plan.message and "raw_exec" in plan.message
    with pytest.raises(ContainersUnavailable, match="cannot start a container") as info:
        plan_containers("on", which=_which({"podman", "buildah"}), version=lambda _: "4.3.1", probe=_fails)
    assert "scripts/containers.conf" in info.value.hint and "--containers off" in info.value.hint


@pytest.mark.containers
@pytest.mark.slow
def test_the_probe_runs_a_real_container_and_reports_podmans_refusal(tmp_path: Path) -> None:
    """The real probe with the project's settings, then with a containers.conf whose rlimits no host grants."""
    require_containers()  # points CONTAINERS_CONF at scripts/containers.conf when unset
    podman = shutil.which("podman")
    assert podman is not None
    assert podman_probe(podman) is None
    assert podman_probe(podman, image="localhost/chutes-no-such-image:none") is None  # nothing to try: no verdict
    impossible = tmp_path / "containers.conf"
    impossible.write_text('[containers]\ndefault_ulimits = ["nofile=2147483647:2147483647"]\n')
    previous = os.environ["CONTAINERS_CONF"]
    os.environ["CONTAINERS_CONF"] = str(impossible)
    try:
        problem = podman_probe(podman)
        plan = plan_containers("auto", probe=podman_probe)
    finally:
        os.environ["CONTAINERS_CONF"] = previous
    assert problem is not None and "rlimit" in problem.lower(), problem
    assert not plan.enabled and "podman cannot start a container here" in plan.message
