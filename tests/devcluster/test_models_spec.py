"""The devcluster's Nomad models and sample bodies, held against Nomad's official OpenAPI spec."""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.canonical import canonicalize
from tests.devcluster.jobspecs import gpu_service_job, python_task
from tests.support import nomad_openapi


@functools.cache
def _spec_properties() -> dict[str, set[str]]:
    path = nomad_openapi.require_spec()
    with path.open() as fh:
        spec = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {name: set(schema.get("properties", {})) for name, schema in spec["components"]["schemas"].items()}


@pytest.mark.parametrize("model", list(models.SPEC_SCHEMAS), ids=lambda m: m.__name__)
def test_every_model_field_exists_in_the_spec_schema(model: type[models.NomadModel]) -> None:
    schema, newer = models.SPEC_SCHEMAS[model]
    properties = _spec_properties()[schema]
    fields = set(model.model_fields) - newer
    assert fields <= properties, f"{model.__name__} has fields the spec's {schema} lacks: {fields - properties}"


def test_the_models_cover_the_spec_fields_of_the_job_tree() -> None:
    """Every field Nomad's spec allows on a job is accepted (unknown means a typo, not a newer feature)."""
    properties = _spec_properties()
    for model, (schema, _) in models.SPEC_SCHEMAS.items():
        missing = properties[schema] - set(model.model_fields)
        assert not missing, f"{model.__name__} would reject valid {schema} fields: {missing}"


def test_sample_bodies_validate_against_the_spec_and_the_models() -> None:
    job = gpu_service_job("chute-x", count=2)
    batch = {
        "ID": "runner",
        "Type": "batch",
        "ParameterizedJob": {"Payload": "required", "MetaRequired": ["run_id"]},
        "TaskGroups": [{"Name": "run", "Tasks": [python_task("main", "print(1)", DispatchPayload={"File": "p.json"})]}],
    }
    for body in (job, batch):
        nomad_openapi.assert_valid("Job", body)
        nomad_openapi.assert_valid("JobRegisterRequest", {"Job": body, "EnforceIndex": True, "JobModifyIndex": 0})
        models.JobRegisterRequest.model_validate({"Job": body})
    nomad_openapi.assert_valid("ScalingRequest", {"Count": 2, "Target": {"Group": "instance"}, "Message": "x"})
    models.ScalingRequest.model_validate({"Count": 2, "Target": {"Group": "instance"}, "Message": "x"})


def _without_nulls(value: Any) -> Any:
    """Nomad serves unset pointers as null; the spec's schemas do not mark them nullable."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def test_canonical_job_as_served_still_validates_against_the_spec() -> None:
    served = canonicalize(models.Job.model_validate(gpu_service_job("chute-y"))).model_dump(mode="json")
    served.pop("NodePool")  # Nomad 1.6+, newer than the spec in reference/
    nomad_openapi.assert_valid("Job", _without_nulls(served))


def test_a_typo_is_rejected_by_both() -> None:
    body = copy.deepcopy(gpu_service_job("typo"))
    body["TaskGroups"][0]["Services"][0]["Checks"][0]["Intervall"] = 1
    assert any("Intervall" in p for p in nomad_openapi.errors("Job", body))
    with pytest.raises(ValidationError) as err:
        models.Job.model_validate(body)
    assert err.value.errors()[0]["loc"][-1] == "Intervall"
