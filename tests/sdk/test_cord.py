import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, Form, Header, Query, Request
from fastapi import Path as FastAPIPath
from pydantic import BaseModel, ValidationError

from chutes.chute import Chute, ChuteError, Cord, DuplicatePath, InvalidPath
from chutes.manifest import CordSpec

from .conftest import new_chute

# The attributes docs/internal-contracts.md promises the runtime.
CONTRACT_ATTRIBUTES = (
    "name",
    "path",
    "public_api_path",
    "public_api_method",
    "method",
    "stream",
    "passthrough",
    "passthrough_port",
    "passthrough_path",
    "output_content_type",
    "func",
    "input_model",
    "takes_model",
    "spec",
)


class Prompt(BaseModel):
    text: str
    temperature: float = 0.7


def test_cord_has_the_contract_attributes_and_defaults(chute: Chute) -> None:
    async def predict(self: Chute, text: str) -> dict[str, str]:
        return {"text": text}

    cord = chute.cord()(predict)
    assert isinstance(cord, Cord)
    for attribute in CONTRACT_ATTRIBUTES:
        assert hasattr(cord, attribute), attribute
    assert cord.name == "predict"
    assert cord.func is predict
    assert (cord.path, cord.public_api_path) == ("/predict", "/predict")
    assert (cord.public_api_method, cord.method) == ("POST", "POST")
    assert cord.stream is False and cord.passthrough is False
    assert cord.passthrough_port is None and cord.passthrough_path is None
    assert cord.output_content_type == "application/json"
    assert cord.takes_model is False and cord.input_model is not None
    assert cord.provision_timeout == 180
    assert chute.cords == [cord]


def test_bare_decorator_works_too(chute: Chute) -> None:
    @chute.cord
    def ping(self: Chute) -> str:
        return "pong"

    assert ping.input_model is None and ping.takes_model is False
    assert ping.output_content_type == "text/plain"


def test_calling_a_cord_runs_the_function_with_the_chute_as_self(chute: Chute) -> None:
    @chute.cord(public_api_path="/add")
    async def add(self: Chute, a: int, b: int = 1) -> dict[str, Any]:
        return {"sum": a + b, "chute": self.name}

    @chute.cord()
    def sync_add(self: Chute, a: int) -> int:
        return a + 1

    assert asyncio.run(add(2, b=3)) == {"sum": 5, "chute": "unit"}
    assert sync_add(1) == 2


@pytest.mark.parametrize(
    ("kwargs", "path", "public"),
    [
        ({"path": "predict/"}, "/predict", "/predict"),
        ({"path": "/v1/run"}, "/v1/run", "/v1/run"),
        ({"public_api_path": "/cached-predict"}, "/f", "/cached-predict"),
        ({"path": "/x_1", "public_api_path": "api/v2/x-1/"}, "/x_1", "/api/v2/x-1"),
    ],
)
def test_paths_are_normalized(kwargs: dict[str, Any], path: str, public: str) -> None:
    def f(self: Chute) -> None:
        pass

    cord = new_chute().cord(**kwargs)(f)
    assert (cord.path, cord.public_api_path) == (path, public)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path": "/Predict"},
        {"path": "/a//b"},
        {"path": "/"},
        {"path": "/-x"},
        {"path": "/a b"},
        {"public_api_path": "/x?y=1"},
        {"public_api_path": "/_ready"},
        {"path": "/_alive"},
    ],
)
def test_invalid_paths_are_refused(kwargs: dict[str, Any]) -> None:
    def f(self: Chute) -> None:
        pass

    with pytest.raises(InvalidPath) as exc:
        new_chute().cord(**kwargs)(f)
    assert "invalid" in str(exc.value)


def test_a_function_name_that_is_not_a_valid_path_gets_a_hint(chute: Chute) -> None:
    def doStuff(self: Chute) -> None:
        pass

    with pytest.raises(InvalidPath) as exc:
        chute.cord()(doStuff)
    assert "'doStuff'" in str(exc.value)
    assert exc.value.hint is not None and "path=" in exc.value.hint


def test_duplicate_paths_are_refused(chute: Chute) -> None:
    @chute.cord()
    def predict(self: Chute) -> None:
        pass

    def other(self: Chute) -> None:
        pass

    with pytest.raises(DuplicatePath, match="path '/predict', which cord 'predict' already uses"):
        chute.cord(path="/predict")(other)
    with pytest.raises(DuplicatePath, match="POST /predict"):
        chute.cord(public_api_path="/predict")(other)
    # Same public path with another method is another address.
    chute.cord(public_api_path="/predict", public_api_method="GET")(other)
    assert [c.name for c in chute.cords] == ["predict", "other"]


def test_a_stream_and_non_stream_pair_may_share_a_public_address(chute: Chute) -> None:
    async def chat(self: Chute, prompt: str) -> dict[str, str]:
        return {}

    async def chat_stream(self: Chute, prompt: str) -> AsyncIterator[str]:
        yield prompt

    async def chat_again(self: Chute, prompt: str) -> dict[str, str]:
        return {}

    chute.cord(public_api_path="/chat")(chat)
    chute.cord(public_api_path="/chat")(chat_stream)
    with pytest.raises(DuplicatePath):
        chute.cord(public_api_path="/chat")(chat_again)
    manifest = chute.manifest()
    assert [(c.public_api_path, c.stream) for c in manifest.cords] == [("/chat", False), ("/chat", True)]


def test_methods(chute: Chute) -> None:
    def f(self: Chute) -> None:
        pass

    def g(self: Chute) -> None:
        pass

    assert chute.cord(public_api_method="get")(f).public_api_method == "GET"
    with pytest.raises(ChuteError, match="invalid public_api_method 'PUT'"):
        chute.cord(public_api_method="PUT")(g)
    with pytest.raises(ChuteError, match="invalid method 'FETCH'"):
        chute.cord(method="FETCH", passthrough=True)(g)
    assert chute.cord(method="delete", passthrough=True)(g).method == "DELETE"


def test_generators_stream(chute: Chute) -> None:
    async def tokens(self: Chute, prompt: str) -> AsyncIterator[dict[str, str]]:
        yield {"token": prompt}

    def lines(self: Chute) -> Iterator[str]:
        yield "a"

    a = chute.cord()(tokens)
    b = chute.cord(stream=True)(lines)
    assert a.stream and b.stream
    assert a.output_content_type == b.output_content_type == "text/event-stream"
    assert a.output_schema == {"additionalProperties": {"type": "string"}, "type": "object"}


def test_stream_flag_must_match_the_function(chute: Chute) -> None:
    async def plain(self: Chute) -> dict[str, str]:
        return {}

    async def gen(self: Chute) -> AsyncIterator[str]:
        yield "x"

    with pytest.raises(ChuteError, match="stream=True but its function is not a generator") as exc:
        chute.cord(stream=True)(plain)
    assert exc.value.hint and "yield" in exc.value.hint
    with pytest.raises(ChuteError, match="stream=False but its function is a generator"):
        chute.cord(stream=False)(gen)


def test_passthrough_defaults_and_rules(chute: Chute) -> None:
    def proxy(self: Chute) -> None:
        pass

    def proxy2(self: Chute) -> None:
        pass

    def plain(self: Chute) -> None:
        pass

    cord = chute.cord(passthrough=True)(proxy)
    assert cord.passthrough_port == 8000 and cord.passthrough_path == "/proxy"
    assert cord.input_model is None and cord.takes_model is False
    other = chute.cord(passthrough=True, passthrough_port=10101, passthrough_path="v1/models", method="GET")(proxy2)
    assert (other.passthrough_port, other.passthrough_path, other.method) == (10101, "/v1/models", "GET")
    with pytest.raises(ChuteError, match="without passthrough=True"):
        chute.cord(passthrough_port=9000)(plain)
    with pytest.raises(ChuteError, match="passthrough_port"):
        new_chute().cord(passthrough=True, passthrough_port=70000)(plain)


def test_input_schema_class_is_passed_whole(chute: Chute) -> None:
    @chute.cord(input_schema=Prompt)
    async def generate(self: Chute, data: Prompt) -> dict[str, Any]:
        return data.model_dump()

    assert generate.input_model is Prompt and generate.takes_model is True
    assert generate.spec().input_schema == Prompt.model_json_schema()
    assert asyncio.run(generate(Prompt(text="hi"))) == {"text": "hi", "temperature": 0.7}


def test_input_schema_needs_a_function_taking_one_argument(chute: Chute) -> None:
    async def generate(self: Chute, data: Prompt, extra: int) -> None:
        pass

    with pytest.raises(ChuteError, match="called with one argument after self") as exc:
        chute.cord(input_schema=Prompt)(generate)
    assert exc.value.hint and "def generate(self, data: Prompt)" in exc.value.hint
    with pytest.raises(ChuteError, match="must be a pydantic model class"):
        chute.cord(input_schema={"type": "object"})(generate)


def test_explicit_output_schema_and_content_type(chute: Chute) -> None:
    def image(self: Chute) -> bytes:
        return b""

    def bad(self: Chute) -> None:
        pass

    cord = chute.cord(output_schema=Prompt, output_content_type="image/png")(image)
    assert cord.output_schema == Prompt.model_json_schema() and cord.output_content_type == "image/png"
    with pytest.raises(ChuteError, match="invalid output_content_type"):
        chute.cord(output_content_type="text/plain\nX-Injected: 1")(bad)


def test_unknown_keyword_arguments_are_kept_like_session_kwargs(chute: Chute) -> None:
    @chute.cord(sglang_passthrough=True, pass_chute=True, provision_timeout=30)
    def f(self: Chute) -> None:
        pass

    assert f.session_kwargs == {"sglang_passthrough": True, "pass_chute": True}
    assert f.provision_timeout == 30
    with pytest.raises(ChuteError, match="provision_timeout"):
        new_chute().cord(provision_timeout=0)(f.func)


def test_spec_is_a_valid_cord_spec(chute: Chute) -> None:
    @chute.cord(public_api_path="/hello", public_api_method="GET")
    async def hello(self: Chute, name: str = "world") -> dict[str, str]:
        return {}

    spec = hello.spec()
    assert isinstance(spec, CordSpec)
    assert spec.model_dump(exclude={"input_schema", "output_schema"}) == {
        "name": "hello",
        "path": "/hello",
        "public_api_path": "/hello",
        "public_api_method": "GET",
        "method": "POST",
        "stream": False,
        "passthrough": False,
        "passthrough_port": None,
        "passthrough_path": None,
        "output_content_type": "application/json",
    }
    assert spec.input_schema is not None and spec.input_schema["properties"]["name"]["default"] == "world"
    assert CordSpec.model_validate_json(spec.model_dump_json()) == spec


def test_derived_input_model_validates_bodies(chute: Chute) -> None:
    @chute.cord()
    async def sum_numbers(self: Chute, numbers: list[float], scale: float = 1.0) -> float:
        return sum(numbers) * scale

    model = sum_numbers.input_model
    assert model is not None and sum_numbers.takes_model is False
    parsed = model.model_validate({"numbers": [1, 2.5]})
    assert asyncio.run(sum_numbers(**parsed.model_dump())) == 3.5
    with pytest.raises(ValidationError):
        model.model_validate({"numbers": "nope"})


# ---- FastAPI request parameters ------------------------------------------------------------------------------


def _api_key(x_api_key: str | None = Header(None)) -> str | None:
    return x_api_key


def test_request_parameters_are_no_input_fields_and_get_a_dependant(chute: Chute) -> None:
    @chute.cord()
    async def secure(
        self: Any,
        data: str,
        request: Request,
        key: str | None = Depends(_api_key),
        page: Annotated[int, Query()] = 1,
    ) -> dict[str, Any]:
        return {}

    assert secure.input_model is not None and list(secure.input_model.model_fields) == ["data"]
    assert secure.dependant is not None
    assert secure.dependant.request_param_name == "request"
    assert [d.name for d in secure.dependant.dependencies] == ["key"]
    assert [q.name for q in secure.dependant.query_params] == ["page"]


def test_plain_cords_have_no_dependant(chute: Chute) -> None:
    @chute.cord()
    async def plain(self: Any, text: str) -> str:
        return text

    assert plain.dependant is None and plain.response_model is None and plain.status_code is None


def test_path_parameters_are_refused(chute: Chute) -> None:
    with pytest.raises(ChuteError, match=r"Path\(\) parameter.*no \{placeholders\}") as info:

        @chute.cord()
        async def item(self: Any, item_id: Annotated[int, FastAPIPath()]) -> None: ...

    assert "Query() or Header()" in str(info.value.hint)


def test_form_fields_are_refused(chute: Chute) -> None:
    with pytest.raises(ChuteError, match="form field"):

        @chute.cord()
        async def upload(self: Any, name: str = Form()) -> None: ...


def test_dependencies_that_read_the_body_as_a_model_are_refused(chute: Chute) -> None:
    class Payload(BaseModel):
        x: int

    def reads_body(payload: Payload) -> int:
        return payload.x

    with pytest.raises(ChuteError, match="reads the request body as a model") as info:

        @chute.cord()
        async def cord_with_body_dep(self: Any, value: int = Depends(reads_body)) -> None: ...

    assert "request.json()" in str(info.value.hint)


def test_response_model_and_status_code_are_checked(chute: Chute) -> None:
    class Out(BaseModel):
        a: int

    @chute.cord(response_model=Out, status_code=201)
    def created(self: Any) -> dict[str, int]:
        return {"a": 1}

    assert created.response_model is Out and created.status_code == 201
    assert created.session_kwargs == {}
    with pytest.raises(ChuteError, match="success status"):

        @chute.cord(status_code=404)
        def missing(self: Any) -> None: ...

    with pytest.raises(ChuteError, match="response_model applies to cords that return one value"):

        @chute.cord(response_model=Out)
        async def streamed(self: Any) -> AsyncIterator[dict[str, int]]:
            yield {"a": 1}
