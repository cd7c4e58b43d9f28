"""The OpenAI-compatible cords shared by the vLLM and SGLang templates.

Each is a passthrough cord to the engine on 127.0.0.1: the runtime forwards the request body unchanged and
relays the answer. ``chat``/``chat_stream`` (and ``completion``/``completion_stream``) share one public address;
the request's ``"stream"`` field picks the variant. Called from Python, each cord calls the engine directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from chutes.chute.base import Chute, ChutePack
from chutes.chute.template import helpers
from chutes.chute.template._engine import add_models_cord, check_engine_args, passthrough, serve_engine
from chutes.chute.template.openai import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)

ENGINE_PORT = 10101
# Flags the LLM templates set themselves; engine_args may not override them.
FORBIDDEN_ENGINE_ARGS = (
    "--revision",
    "--served-model-name",
    "--api-key",
    "--model",
    "--model-path",
    "--host",
    "--port",
)


class LLMChute(ChutePack):
    """What build_vllm_chute / build_sglang_chute return: the chute and its main cords."""

    chat: Callable[..., Any]
    completion: Callable[..., Any]
    chat_stream: Callable[..., Any]
    completion_stream: Callable[..., Any]
    models: Callable[..., Any]


def add_openai_cords(chute: Chute, *, port: int = ENGINE_PORT, tokenize: bool, **extra: Any) -> dict[str, Any]:
    """Declare the OpenAI-style passthrough cords on ``chute``; returns them by name."""
    common: dict[str, Any] = {"method": "POST", **extra}
    chat_route = passthrough(port, "/v1/chat/completions", input_schema=ChatCompletionRequest, **common)
    completion_route = passthrough(port, "/v1/completions", input_schema=CompletionRequest, **common)

    @chute.cord(**chat_route, stream=True)
    async def chat_stream(self: Chute, data: ChatCompletionRequest) -> AsyncIterator[ChatCompletionStreamResponse]:
        async for chunk in helpers.stream_engine(self, port, "/v1/chat/completions", data):
            yield chunk

    @chute.cord(**chat_route)
    async def chat(self: Chute, data: ChatCompletionRequest) -> ChatCompletionResponse:
        result: ChatCompletionResponse = await helpers.call_engine(self, port, "/v1/chat/completions", data)
        return result

    @chute.cord(**completion_route, stream=True)
    async def completion_stream(self: Chute, data: CompletionRequest) -> AsyncIterator[CompletionStreamResponse]:
        async for chunk in helpers.stream_engine(self, port, "/v1/completions", data):
            yield chunk

    @chute.cord(**completion_route)
    async def completion(self: Chute, data: CompletionRequest) -> CompletionResponse:
        result: CompletionResponse = await helpers.call_engine(self, port, "/v1/completions", data)
        return result

    cords: dict[str, Any] = {
        "chat_stream": chat_stream,
        "chat": chat,
        "completion_stream": completion_stream,
        "completion": completion,
    }

    if tokenize:

        @chute.cord(path="/do_tokenize", **passthrough(port, "/tokenize", input_schema=TokenizeRequest, **common))
        async def do_tokenize(self: Chute, data: TokenizeRequest) -> TokenizeResponse:
            result: TokenizeResponse = await helpers.call_engine(self, port, "/tokenize", data)
            return result

        @chute.cord(path="/do_detokenize", **passthrough(port, "/detokenize", input_schema=DetokenizeRequest, **common))
        async def do_detokenize(self: Chute, data: DetokenizeRequest) -> DetokenizeResponse:
            result: DetokenizeResponse = await helpers.call_engine(self, port, "/detokenize", data)
            return result

        cords.update(do_tokenize=do_tokenize, do_detokenize=do_detokenize)

    cords["get_models"] = add_models_cord(chute, port, **common)
    return cords


# (model, served name, revision, api key, GPU count, engine args) -> the engine's command line.
LLMCommand = Callable[[str, str, str, str, int, list[str]], list[str]]


def build_llm_chute(
    engine: str,
    command: LLMCommand,
    settings: Mapping[str, Any],
    *,
    tokenize: bool,
    env: Mapping[str, str] | None = None,
    **cord_options: Any,
) -> LLMChute:
    """What ``build_<engine>_chute`` builds from its arguments (``settings``): the chute, its engine and cords."""
    chute_settings = dict(settings)
    model_name: str = chute_settings.pop("model_name")
    engine_args = chute_settings.pop("engine_args")
    builder = f"build_{engine}_chute"
    locked, args = check_engine_args(
        builder, model_name, chute_settings.pop("revision"), engine_args, FORBIDDEN_ENGINE_ARGS
    )
    chute = Chute(name=model_name, standard_template="vllm", revision=locked, **chute_settings)

    def engine_command(self: Chute, api_key: str | None) -> list[str]:
        return command(model_name, self.name, locked, api_key or "", helpers.visible_gpu_count(self), args)

    serve_engine(chute, engine, engine_command, ENGINE_PORT, "/v1/models", download=(model_name, locked), env=env)
    cords = add_openai_cords(chute, tokenize=tokenize, **cord_options)
    return LLMChute(
        chute=chute,
        chat=cords["chat"],
        chat_stream=cords["chat_stream"],
        completion=cords["completion"],
        completion_stream=cords["completion_stream"],
        models=cords["get_models"],
    )
