from __future__ import annotations  # every annotation below is a string: resolution is part of what is tested

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, Response
from pydantic import BaseModel, Field, ValidationError

from chutes import schema


class Item(BaseModel):
    text: str
    weight: float = 1.0


class NotJson:
    pass


def api_key() -> str:
    return "k"


def test_typed_parameters_become_fields_with_their_defaults() -> None:
    def predict(self: Any, text: str, top_k: int = 3, tags: list[str] | None = None, raw=None) -> dict:  # type: ignore[no-untyped-def]
        return {}

    spec = schema.derive_input(predict)
    assert spec.takes_model is False and spec.model is not None
    js = spec.json_schema()
    assert js is not None
    assert js["required"] == ["text"]
    assert js["properties"]["top_k"] == {"default": 3, "title": "Top K", "type": "integer"}
    assert js["additionalProperties"] is False
    instance = spec.model.model_validate({"text": "hi", "raw": {"any": ["thing"]}})
    assert instance.model_dump() == {"text": "hi", "top_k": 3, "tags": None, "raw": {"any": ["thing"]}}
    with pytest.raises(ValidationError):
        spec.model.model_validate({"text": "hi", "unknown": 1})
    with pytest.raises(ValidationError):
        spec.model.model_validate({"top_k": 1})


def test_a_single_model_parameter_is_the_input_model() -> None:
    def predict(self: Any, data: Item) -> dict[str, Any]:
        return {}

    spec = schema.derive_input(predict)
    assert spec.model is Item and spec.takes_model is True


def test_a_model_parameter_among_others_is_a_nested_field() -> None:
    def predict(self: Any, data: Item, verbose: bool = False) -> None:
        pass

    spec = schema.derive_input(predict)
    assert spec.takes_model is False and spec.model is not None
    assert spec.model.model_validate({"data": {"text": "x"}}).model_dump()["data"] == {"text": "x", "weight": 1.0}


def test_no_parameters_means_no_input_and_kwargs_let_unknown_fields_through() -> None:
    def ping(self: Any) -> str:
        return "pong"

    assert schema.derive_input(ping) == schema.InputSpec(model=None, takes_model=False)

    def anything(self: Any, prompt: str, **kwargs: Any) -> None:
        pass

    spec = schema.derive_input(anything)
    assert spec.model is not None
    assert spec.model.model_validate({"prompt": "p", "seed": 4}).model_dump() == {"prompt": "p", "seed": 4}


def test_constraints_in_annotated_fields_are_enforced() -> None:
    def count(self: Any, to: Annotated[int, Field(ge=1, le=10)] = 5) -> None:
        pass

    spec = schema.derive_input(count)
    assert spec.model is not None
    with pytest.raises(ValidationError):
        spec.model.model_validate({"to": 11})


def test_fastapi_dependencies_are_not_input_fields() -> None:
    def secure(self: Any, data: str, key: str = Depends(api_key)) -> None:
        pass

    spec = schema.derive_input(secure)
    assert spec.model is not None
    assert list(spec.model.model_fields) == ["data"]


def test_parameters_named_like_basemodel_methods_still_work() -> None:
    def handler(self: Any, json: str, schema: int = 0, model_id: str = "m") -> None:
        pass

    spec = schema_of(handler)
    assert spec.model is not None
    assert spec.model.model_validate({"json": "j"}).model_dump() == {"json": "j", "schema": 0, "model_id": "m"}


def schema_of(func: Any) -> schema.InputSpec:
    return schema.derive_input(func)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(self, *args): pass", "parameter 'args' of f cannot be filled from a JSON object"),
        ("def f(self, x, /): pass", "parameter 'x' of f cannot be filled"),
        ("def f(self, _x: int): pass", "parameter '_x' of f starts with '_'"),
        ("def f(self, x: 'Missing'): pass", "cannot resolve the type hint 'Missing' of parameter 'x'"),
        ("def f(self, x: NotJson): pass", "parameter 'x' of f has a type that cannot be read from JSON"),
        ("def f(): pass", "f must take the chute as its first parameter"),
    ],
)
def test_functions_that_cannot_take_json_are_refused_with_the_parameter_named(source: str, message: str) -> None:
    namespace: dict[str, Any] = {"NotJson": NotJson}
    exec(source, namespace)
    with pytest.raises(schema.SchemaError) as exc:
        schema.derive_input(namespace["f"])
    assert message in str(exc.value)
    assert exc.value.hint


def test_output_schemas_from_return_annotations() -> None:
    def obj(self: Any) -> dict[str, int]: ...
    def arr(self: Any) -> list[Item]: ...
    def text(self: Any) -> str: ...
    def raw(self: Any) -> Response: ...
    def nothing(self: Any): ...  # type: ignore[no-untyped-def]

    async def stream(self: Any) -> AsyncIterator[Item]:
        yield Item(text="x")

    def sync_stream(self: Any) -> Iterator[str]:
        yield "x"

    assert schema.output_schema(obj, stream=False) == {"additionalProperties": {"type": "integer"}, "type": "object"}
    assert schema.output_schema(arr, stream=False)["type"] == "array"  # type: ignore[index]
    assert schema.output_schema(text, stream=False) == {"type": "string"}
    assert schema.output_schema(raw, stream=False) is None
    assert schema.output_schema(nothing, stream=False) is None
    assert schema.output_schema(stream, stream=True)["title"] == "Item"  # type: ignore[index]
    assert schema.output_schema(sync_stream, stream=True) == {"type": "string"}
    assert schema.is_streaming(stream) and schema.is_streaming(sync_stream) and not schema.is_streaming(obj)


@pytest.mark.parametrize(
    ("out", "stream", "expected"),
    [
        ({"type": "object"}, False, "application/json"),
        ({"type": "array", "items": {}}, False, "application/json"),
        ({"$ref": "#/$defs/X", "$defs": {}}, False, "application/json"),
        ({"type": "string"}, False, "text/plain"),
        ({"type": "integer"}, False, "text/plain"),
        ({"type": "string", "format": "binary"}, False, "application/octet-stream"),
        (None, False, None),
        ({"type": "object"}, True, "text/event-stream"),
        (None, True, "text/event-stream"),
    ],
)
def test_content_type_inference(out: dict[str, Any] | None, stream: bool, expected: str | None) -> None:
    assert schema.infer_content_type(out, stream=stream) == expected
