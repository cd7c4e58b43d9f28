"""``build_embedding_chute``: OpenAI-compatible embeddings served by vLLM's pooling runner.

The startup hook starts vLLM on 127.0.0.1:10101 with a pooler configuration (pooling type chosen from the
model's family when ``pooling_type="auto"``); the cords pass ``/v1/embeddings`` and ``GET /v1/models`` through.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from chutes.chute.base import Chute, ChutePack
from chutes.chute.errors import ChuteError
from chutes.chute.node_selector import NodeSelector
from chutes.chute.template import helpers
from chutes.chute.template._engine import (
    add_models_cord,
    check_engine_args,
    openai_server_command,
    passthrough,
    serve_engine,
)
from chutes.chute.template.llm import ENGINE_PORT, FORBIDDEN_ENGINE_ARGS
from chutes.chute.template.openai import EmbeddingRequest, EmbeddingResponse
from chutes.image import Image
from chutes.image.standard import VLLM

POOLING_TYPES = ("MEAN", "CLS", "LAST")


class EmbeddingChutePack(ChutePack):
    embed: Callable[..., Any]


def pooling_type_for(model_name: str) -> str:
    """The pooling most models of a family were trained with (Chutes' table)."""
    name = model_name.lower()
    if "bge-" in name:
        return "CLS"
    if "gte-" in name or ("qwen" in name and "embedding" in name):
        return "LAST"
    return "MEAN"


def embedding_command(
    model_name: str,
    served_name: str,
    revision: str,
    api_key: str,
    gpu_count: int,
    pooler_config: dict[str, Any],
    engine_args: Sequence[str] = (),
    port: int = ENGINE_PORT,
) -> list[str]:
    """The command line that starts vLLM as an embedding server for a chute."""
    args = helpers.with_tensor_parallel(list(engine_args), gpu_count)
    pooler = ["--pooler-config", json.dumps(pooler_config, sort_keys=True)]
    module = "vllm.entrypoints.openai.api_server"
    return openai_server_command(module, "--model", model_name, served_name, revision, api_key, port, args, pooler)


def build_embedding_chute(
    username: str,
    model_name: str,
    node_selector: NodeSelector,
    image: str | Image = VLLM,
    tagline: str = "",
    readme: str = "",
    concurrency: int = 32,
    engine_args: str | Sequence[str] | None = None,
    revision: str | None = None,
    max_instances: int = 1,
    scaling_threshold: float = 0.75,
    shutdown_after_seconds: int = 300,
    pooling_type: str = "auto",
    max_embed_len: int = 3072000,
    enable_chunked_processing: bool = True,
    allow_external_egress: bool = False,
    tee: bool = False,
) -> EmbeddingChutePack:
    """A chute named after ``model_name`` that serves its embeddings (revision required)."""
    forbidden = (*FORBIDDEN_ENGINE_ARGS, "--pooler-config")
    locked, args = check_engine_args("build_embedding_chute", model_name, revision, engine_args, forbidden)
    pooling = pooling_type_for(model_name) if pooling_type == "auto" else pooling_type.upper()
    if pooling not in POOLING_TYPES:
        raise ChuteError(f"invalid pooling_type {pooling_type!r}: use auto, {', '.join(POOLING_TYPES)}")
    if isinstance(max_embed_len, bool) or not isinstance(max_embed_len, int) or max_embed_len < 1:
        raise ChuteError(f"max_embed_len must be a positive number of tokens, got {max_embed_len!r}")
    pooler_config: dict[str, Any] = {"pooling_type": pooling, "normalize": True}
    if enable_chunked_processing:
        pooler_config.update(enable_chunked_processing=True, max_embed_len=max_embed_len)
    chute = Chute(
        username=username,
        name=model_name,
        image=image,
        tagline=tagline,
        readme=readme,
        node_selector=node_selector,
        concurrency=concurrency,
        standard_template="embedding",
        revision=locked,
        max_instances=max_instances,
        scaling_threshold=scaling_threshold,
        shutdown_after_seconds=shutdown_after_seconds,
        allow_external_egress=allow_external_egress,
        tee=tee,
    )

    def engine_command(self: Chute, api_key: str | None) -> list[str]:
        gpu_count = helpers.visible_gpu_count(self)
        return embedding_command(model_name, self.name, locked, api_key or "", gpu_count, pooler_config, args)

    env = {"VLLM_ENABLE_CHUNKED_PROCESSING": "true"} if enable_chunked_processing else None
    serve_engine(
        chute, "embedding_engine", engine_command, ENGINE_PORT, "/v1/models", download=(model_name, locked), env=env
    )

    @chute.cord(**passthrough(ENGINE_PORT, "/v1/embeddings", input_schema=EmbeddingRequest))
    async def embed(self: Chute, data: EmbeddingRequest) -> EmbeddingResponse:
        result: EmbeddingResponse = await helpers.call_engine(self, ENGINE_PORT, "/v1/embeddings", data)
        return result

    add_models_cord(chute, ENGINE_PORT)
    return EmbeddingChutePack(chute=chute, embed=embed)
