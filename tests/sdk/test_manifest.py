from typing import Any

import pytest
from pydantic import ValidationError

from chutes.identity import chute_id
from chutes.manifest import Manifest


def manifest_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "chute_id": chute_id("alice", "echo"),
        "username": "alice",
        "name": "echo",
        "image": {"ref": "python:3.12"},
        "cords": [{"name": "echo", "path": "/echo", "public_api_path": "/echo"}],
        "sdk_version": "0.1.0",
    }
    data.update(overrides)
    return data


def cord(name: str, path: str, public: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "path": path, "public_api_path": public, **extra}


def test_a_minimal_manifest_is_valid_and_fills_defaults() -> None:
    manifest = Manifest.model_validate(manifest_data())
    assert manifest.node_selector.gpu_count == 1 and manifest.concurrency == 1
    assert manifest.cords[0].public_api_method == "POST"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"chute_id": chute_id("alice", "other")}, "chute_id does not match username and name"),
        ({"username": "Alice", "chute_id": chute_id("Alice", "echo")}, "invalid username"),
        ({"cords": []}, "a chute needs at least one cord or one job"),
        ({"jobs": [{"name": "train"}]}, "a chute has cords or jobs, not both"),
        ({"cords": [cord("a", "/a", "/x"), cord("b", "/a", "/y")]}, "duplicate cord path '/a'"),
        ({"cords": [cord("a", "/a", "/x"), cord("b", "/b", "/x")]}, "cords a, b share POST /x"),
        (
            {"cords": [cord("a", "/a", "/x", stream=True), cord("b", "/b", "/x"), cord("c", "/c", "/x")]},
            "only a stream/non-stream pair may share a public address",
        ),
        ({"cords": [cord("a", "/A", "/a")]}, "invalid path '/A'"),
        ({"cords": [cord("a", "/a", "/a", public_api_method="PUT")]}, "public_api_method"),
        ({"cords": [cord("a", "/a", "/a", passthrough_port=0)]}, "passthrough_port"),
        ({"cords": [], "jobs": [{"name": "t", "timeout": 10}]}, "timeout"),
        ({"cords": [], "jobs": [{"name": "t"}, {"name": "t"}]}, "duplicate job name"),
        ({"cords": [], "jobs": [{"name": "t", "ports": [{"name": "p", "port": 9000, "proto": "sctp"}]}]}, "proto"),
        ({"node_selector": {"include": ["nope"]}}, "unknown GPU id 'nope'"),
        ({"concurrency": 0}, "concurrency"),
        ({"max_instances": 101}, "max_instances"),
        ({"scaling_threshold": 2}, "scaling_threshold"),
        ({"shutdown_after_seconds": 10}, "shutdown_after_seconds"),
        ({"image": {"ref": ""}}, "image.ref"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
        ({"cords": [cord("a", "/a", "/a", secret=True)]}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_manifests_are_refused_with_a_reason(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Manifest.model_validate(manifest_data(**overrides))
    assert message in str(exc.value)


def test_a_stream_pair_may_share_a_public_address() -> None:
    cords = [
        cord("chat", "/chat", "/v1/chat", stream=False),
        cord("chat_stream", "/chat_stream", "/v1/chat", stream=True),
    ]
    manifest = Manifest.model_validate(manifest_data(cords=cords))
    assert [c.stream for c in manifest.cords] == [False, True]


def test_computed_node_selector_fields_are_recomputed_not_trusted() -> None:
    data = manifest_data(
        node_selector={"gpu_count": 2, "include": ["a100"], "eligible_gpus": ["b200"], "hourly_price_usd": 0.0}
    )
    manifest = Manifest.model_validate(data)
    assert manifest.node_selector.eligible_gpus == ["a100"]
    assert manifest.node_selector.hourly_price_usd == 2.4
