"""``chutes dev --containers auto|on|off``: the decision, and the settings it hands to the scheduler."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chutes.dev.containers import HOST_ALIAS, ContainersUnavailable, plan_containers


def _which(found: set[str]) -> Callable[[str], str | None]:
    return lambda tool: f"/usr/bin/{tool}" if tool in found else None


def test_auto_turns_containers_on_with_podman_and_buildah() -> None:
    plan = plan_containers("auto", which=_which({"podman", "buildah"}), version=lambda _: "4.3.1")
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
    plan = plan_containers("auto", which=_which(found), version=lambda _: version)
    assert not plan.enabled and why in plan.message and "raw_exec" in plan.message
    assert plan.devcluster_args() == ["--docker-driver", "off"]
    # No docker driver: the scheduler must not render docker tasks, whatever was built.
    assert plan.scheduler_env() == {"CHUTES_TASK_DRIVER": "raw_exec"}
    with pytest.raises(ContainersUnavailable, match=why) as info:
        plan_containers("on", which=_which(found), version=lambda _: version)
    assert "--containers off" in info.value.hint


def test_off_is_off_even_with_podman() -> None:
    plan = plan_containers("off", which=_which({"podman", "buildah"}), version=lambda _: "4.3.1")
    assert not plan.enabled and "--containers off" in plan.message
    with pytest.raises(ContainersUnavailable, match="not a mode"):
        plan_containers("sometimes")
