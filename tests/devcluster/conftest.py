from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.devcluster import DevclusterHandle, devcluster

NODES = ("gpu-a=h100_sxm:8", "gpu-b=a10:2", "gpu-c=l40s:2")
# The shared devclusters run raw_exec only (placement counts stay the same with or without podman);
# test_docker_driver.py starts its own with --docker-driver on.
DC_ARGS = ["--session-min-ttl", "1s", "--docker-driver", "off"]


@pytest.fixture(scope="module")
def dc() -> Iterator[DevclusterHandle]:
    """One devcluster per test module (tests use distinct job IDs and KV keys)."""
    with devcluster(NODES, extra_args=DC_ARGS) as handle:
        yield handle


@pytest.fixture
def fresh_dc() -> Iterator[DevclusterHandle]:
    """A devcluster of its own, for tests that restart or kill it."""
    with devcluster(NODES, extra_args=DC_ARGS) as handle:
        yield handle
