"""OpenAI-compatible request and response models of the LLM and embedding templates.

Requests allow unknown fields (``tools``, ``logit_bias``, new engine options): the body is checked for the
fields named here and forwarded unchanged to the engine, which has the last word.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: str
    content: str | list[dict[str, Any]] | None = None


class BaseRequest(_Open):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=9223372036854775807)
    stop: str | list[str] | None = None
    stream: bool = False
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | int | None = None


class ChatCompletionRequest(BaseRequest):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(BaseRequest):
    prompt: str | list[str] | list[int] | list[list[int]]


class TokenizeRequest(_Open):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True


class DetokenizeRequest(_Open):
    model: str | None = None
    tokens: list[int]


class UsageInfo(_Open):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0


class ChatCompletionChoice(_Open):
    index: int
    message: ChatMessage
    finish_reason: str | None = None


class ChatCompletionResponse(_Open):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo | None = None


class DeltaMessage(_Open):
    role: str | None = None
    content: str | None = None


class ChatCompletionStreamChoice(_Open):
    index: int
    delta: DeltaMessage
    finish_reason: str | None = None


class ChatCompletionStreamResponse(_Open):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: UsageInfo | None = None


class CompletionChoice(_Open):
    index: int
    text: str
    finish_reason: str | None = None


class CompletionResponse(_Open):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


# A chunk of a streamed completion has the whole answer's fields (no docstring: it would enter the schema).
class CompletionStreamResponse(CompletionResponse): ...


class TokenizeResponse(_Open):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeResponse(_Open):
    prompt: str


class ModelCard(_Open):
    id: str
    object: str = "model"


class ModelList(_Open):
    object: str = "list"
    data: list[ModelCard]


class EmbeddingRequest(_Open):
    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class EmbeddingData(_Open):
    index: int
    object: str = "embedding"
    embedding: list[float] | str


class EmbeddingResponse(_Open):
    id: str | None = None
    object: str = "list"
    data: list[EmbeddingData]
    model: str
    usage: UsageInfo | None = None
