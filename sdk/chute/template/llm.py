"""The OpenAI-compatible cords shared by the vLLM and SGLang templates.

Each is a passthrough cord to the engine on 127.0.0.1: the runtime forwards the request body unchanged and
relays the answer. ``chat``/``chat_stream`` (and ``completion``/``completion_stream``) share one public address;
the request's ``"stream"`` field picks the variant. Called from Python, each cord calls the engine directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from chutes.chute.base import Chute, ChutePack
from chutes.chute.template import helpers
from chutes.chute.template.openai import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelList,
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
    common: dict[str, Any] = {"passthrough": True, "passthrough_port": port, "method": "POST", **extra}

    @chute.cord(
        passthrough_path="/v1/chat/completions",
        public_api_path="/v1/chat/completions",
        stream=True,
        input_schema=ChatCompletionRequest,
        **common,
    )
    async def chat_stream(self: Chute, data: ChatCompletionRequest) -> AsyncIterator[ChatCompletionStreamResponse]:
        async for chunk in helpers.stream_engine(self, port, "/v1/chat/completions", data):
            yield chunk

    @chute.cord(
        passthrough_path="/v1/chat/completions",
        public_api_path="/v1/chat/completions",
        input_schema=ChatCompletionRequest,
        **common,
    )
    async def chat(self: Chute, data: ChatCompletionRequest) -> ChatCompletionResponse:
        result: ChatCompletionResponse = await helpers.call_engine(self, port, "/v1/chat/completions", data)
        return result

    @chute.cord(
        passthrough_path="/v1/completions",
        public_api_path="/v1/completions",
        stream=True,
        input_schema=CompletionRequest,
        **common,
    )
    async def completion_stream(self: Chute, data: CompletionRequest) -> AsyncIterator[CompletionStreamResponse]:
        async for chunk in helpers.stream_engine(self, port, "/v1/completions", data):
            yield chunk

    @chute.cord(
        passthrough_path="/v1/completions",
        public_api_path="/v1/completions",
        input_schema=CompletionRequest,
        **common,
    )
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

        @chute.cord(
            path="/do_tokenize",
            passthrough_path="/tokenize",
            public_api_path="/tokenize",
            input_schema=TokenizeRequest,
            **common,
        )
        async def do_tokenize(self: Chute, data: TokenizeRequest) -> TokenizeResponse:
            result: TokenizeResponse = await helpers.call_engine(self, port, "/tokenize", data)
            return result

        @chute.cord(
            path="/do_detokenize",
            passthrough_path="/detokenize",
            public_api_path="/detokenize",
            input_schema=DetokenizeRequest,
            **common,
        )
        async def do_detokenize(self: Chute, data: DetokenizeRequest) -> DetokenizeResponse:
            result: DetokenizeResponse = await helpers.call_engine(self, port, "/detokenize", data)
            return result

        cords.update(do_tokenize=do_tokenize, do_detokenize=do_detokenize)

    @chute.cord(
        passthrough_path="/v1/models",
        public_api_path="/v1/models",
        public_api_method="GET",
        **{**common, "method": "GET"},
    )
    async def get_models(self: Chute) -> ModelList:
        result: ModelList = await helpers.call_engine(self, port, "/v1/models", method="GET")
        return result

    cords["get_models"] = get_models
    return cords
