import asyncio
import re
from typing import Any

import pytest
from pydantic import BaseModel

from chutes.chute import Chute, ChuteError, Job, Port
from chutes.manifest import JobSpec, PortSpec

from .conftest import new_chute


class TrainConfig(BaseModel):
    epochs: int = 1


def test_job_has_the_contract_attributes(chute: Chute) -> None:
    @chute.job(timeout=3600, upload=True)
    async def train_model(self: Chute, training_data: dict[str, Any]) -> dict[str, Any]:
        return {"rows": len(training_data), "chute": self.name}

    assert isinstance(train_model, Job)
    for attribute in ("name", "func", "timeout", "upload", "ports", "input_model", "takes_model", "spec"):
        assert hasattr(train_model, attribute), attribute
    assert (train_model.name, train_model.timeout, train_model.upload, train_model.ports) == (
        "train_model",
        3600,
        True,
        [],
    )
    assert train_model.takes_model is False and train_model.input_model is not None
    assert set(train_model.input_model.model_fields) == {"training_data"}
    assert asyncio.run(train_model({"a": 1})) == {"rows": 1, "chute": "unit"}
    assert chute.jobs == [train_model]


def test_a_model_parameter_is_passed_whole(chute: Chute) -> None:
    @chute.job()
    def train(self: Chute, config: TrainConfig) -> None:
        pass

    assert train.input_model is TrainConfig and train.takes_model is True


@pytest.mark.parametrize("timeout", [None, 30, 86400])
def test_valid_timeouts(timeout: int | None) -> None:
    def run(self: Chute) -> None:
        pass

    assert new_chute().job(timeout=timeout)(run).timeout == timeout


@pytest.mark.parametrize("timeout", [0, 29, 86401, True, 60.5])
def test_invalid_timeouts(timeout: Any) -> None:
    def run(self: Chute) -> None:
        pass

    with pytest.raises(ChuteError, match="must be None or 30-86400 seconds"):
        new_chute().job(timeout=timeout)(run)


def test_ports_follow_the_chutes_rules() -> None:
    def serve(self: Chute) -> None:
        pass

    job = new_chute().job(
        ports=[Port(name="web", port=8002, proto="http"), {"name": "udp1", "port": 65535, "proto": "udp"}], ssh=True
    )(serve)
    assert [(p.name, p.port, p.proto) for p in job.ports] == [
        ("web", 8002, "http"),
        ("udp1", 65535, "udp"),
        ("ssh", 2202, "tcp"),
    ]
    assert job.spec() == JobSpec(
        name="serve",
        timeout=None,
        upload=True,
        ports=[
            PortSpec(name="web", port=8002, proto="http"),
            PortSpec(name="udp1", port=65535, proto="udp"),
            PortSpec(name="ssh", port=2202, proto="tcp"),
        ],
    )


@pytest.mark.parametrize(
    ("ports", "ssh", "message"),
    [
        ([{"name": "web", "port": 8001}], False, "use 2202 (ssh) or a port in 8002-65535"),
        ([{"name": "web", "port": 22}], False, "use 2202 (ssh) or a port in 8002-65535"),
        ([{"name": "web", "port": 65536}], False, "use 2202"),
        ([{"name": "web", "port": 9000}, {"name": "api", "port": 9000}], False, "duplicate port number 9000"),
        ([{"name": "web", "port": 9000}, {"name": "web", "port": 9001}], False, "duplicate port name web"),
        ([{"name": "sshd", "port": 2202}], True, "duplicate port number 2202"),
        ([{"name": "Web", "port": 9000}], False, "invalid port"),
        ([{"name": "web", "port": 9000, "proto": "sctp"}], False, "invalid port"),
    ],
)
def test_invalid_ports(ports: list[dict[str, Any]], ssh: bool, message: str) -> None:
    def serve(self: Chute) -> None:
        pass

    with pytest.raises(ChuteError, match=re.escape(message)):
        new_chute().job(ports=ports, ssh=ssh)(serve)


def test_a_chute_has_cords_or_jobs_not_both() -> None:
    def work(self: Chute) -> None:
        pass

    def endpoint(self: Chute) -> None:
        pass

    with_jobs = new_chute()
    with_jobs.job()(work)
    with pytest.raises(ChuteError, match="has jobs, and a chute has cords or jobs, not both"):
        with_jobs.cord()(endpoint)
    with_cords = new_chute()
    with_cords.cord()(endpoint)
    with pytest.raises(ChuteError, match="has cords, and a chute has cords or jobs, not both"):
        with_cords.job()(work)


def test_job_names_are_unique_and_the_manifest_lists_jobs() -> None:
    chute = new_chute()

    @chute.job(timeout=60)
    def work(self: Chute) -> None:
        pass

    with pytest.raises(ChuteError, match="already has a job named 'work'"):
        chute.job()(work.func)
    manifest = chute.manifest()
    assert manifest.cords == [] and [j.name for j in manifest.jobs] == ["work"]
    assert manifest.jobs[0].timeout == 60
