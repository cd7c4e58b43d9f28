"""Strict validation of Nomad JSON bodies against Nomad's official OpenAPI spec (kept outside the project).

The spec lives in ``../shared/reference/nomad-openapi/openapi.yaml`` beside the clone (or at
``$CHUTES_NOMAD_OPENAPI``). Its schemas do not forbid unknown fields, so every object schema with
``properties`` gets ``additionalProperties: false`` here: a misspelt field name fails the check.
Tests that need the spec call ``require_spec()``, which skips with a clear reason when it is absent.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = REPO.parent / "shared" / "reference" / "nomad-openapi" / "openapi.yaml"


def spec_path() -> Path:
    return Path(os.environ.get("CHUTES_NOMAD_OPENAPI", DEFAULT_SPEC))


def require_spec() -> Path:
    path = spec_path()
    if not path.is_file():
        pytest.skip(f"Nomad OpenAPI spec not found at {path} (set CHUTES_NOMAD_OPENAPI to its path)")
    return path


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {key: _strict(value) for key, value in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            out["$ref"] = "#/$defs/" + ref.rsplit("/", 1)[1]
        if out.pop("nullable", False):
            out = {"anyOf": [out, {"type": "null"}]}
        elif "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


@functools.cache
def _schemas() -> dict[str, Any]:
    with require_spec().open() as fh:
        spec = yaml.safe_load(fh)
    return {name: _strict(copy.deepcopy(schema)) for name, schema in spec["components"]["schemas"].items()}


def schema_names() -> list[str]:
    return sorted(_schemas())


def errors(schema_name: str, body: Any) -> list[str]:
    """Every violation of ``body`` against components/schemas/<schema_name>, strictly (unknown fields too)."""
    defs = _schemas()
    if schema_name not in defs:
        raise KeyError(f"no schema {schema_name!r} in the Nomad OpenAPI spec")
    validator = Draft202012Validator({"$ref": f"#/$defs/{schema_name}", "$defs": defs})
    found: list[ValidationError] = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


def assert_valid(schema_name: str, body: Any) -> None:
    """Fail the test with every violation listed when ``body`` does not match the schema."""
    problems = errors(schema_name, body)
    assert not problems, f"{schema_name} does not validate against Nomad's OpenAPI spec:\n" + "\n".join(problems)
