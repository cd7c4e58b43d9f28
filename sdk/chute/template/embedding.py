"""``build_embedding_chute``: OpenAI-compatible embeddings served by vLLM's pooling runner.

The startup hook starts vLLM on 127.0.0.1:10101 with a pooler configuration (pooling type chosen from the
model's family when ``pooling_type="auto"``); the cords pass ``/v1/embeddings`` and ``GET /v1/models`` through.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any

from chutes.chute.base import Chute, ChutePack
from chutes.chute.errors import ChuteError
from chutes.chute.node_selector import NodeSelector
from chutes.chute.template import helpers
from chutes.chute.template.llm import ENGINE_PORT, FORBIDDEN_ENGINE_ARGS
from chutes.chute.template.openai import EmbeddingRequest, EmbeddingResponse, ModelList
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
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_name,
        "--served-model-name",
        served_name,
        "--revision",
        revision,
        "--api-key",
        api_key,
        "--pooler-config",
        json.dumps(pooler_config, sort_keys=True),
        "--host",
        helpers.ENGINE_HOST,
        "--port",
        str(port),
        *args,
    ]


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
    locked = helpers.require_revision("build_embedding_chute", model_name, revision)
    args = helpers.parse_engine_args("build_embedding_chute", engine_args, (*FORBIDDEN_ENGINE_ARGS, "--pooler-config"))
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
    # The engine process, once started (kept here rather than on the chute, which users own).
    engine: dict[str, asyncio.subprocess.Process] = {}

    @chute.on_startup()
    async def start_embedding_engine(self: Chute) -> None:
        await helpers.download_model(model_name, locked)
        api_key = secrets.token_urlsafe(32)
        gpu_count = helpers.visible_gpu_count(self)
        command = embedding_command(model_name, self.name, locked, api_key, gpu_count, pooler_config, args)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if enable_chunked_processing:
            env["VLLM_ENABLE_CHUNKED_PROCESSING"] = "true"
        headers = {"Authorization": f"Bearer {api_key}"}
        probe = helpers.http_probe(f"http://{helpers.ENGINE_HOST}:{ENGINE_PORT}/v1/models", headers)
        engine["process"] = await helpers.launch_engine(command, probe, env=env)
        self.passthrough_headers.update(headers)

    @chute.on_shutdown()
    async def stop_embedding_engine(self: Chute) -> None:
        await helpers.stop_engine(engine.pop("process", None))

    common: dict[str, Any] = {"passthrough": True, "passthrough_port": ENGINE_PORT}

    @chute.cord(
        passthrough_path="/v1/embeddings", public_api_path="/v1/embeddings", input_schema=EmbeddingRequest, **common
    )
    async def embed(self: Chute, data: EmbeddingRequest) -> EmbeddingResponse:
        result: EmbeddingResponse = await helpers.call_engine(self, ENGINE_PORT, "/v1/embeddings", data)
        return result

    @chute.cord(
        passthrough_path="/v1/models", public_api_path="/v1/models", public_api_method="GET", method="GET", **common
    )
    async def get_models(self: Chute) -> ModelList:
        result: ModelList = await helpers.call_engine(self, ENGINE_PORT, "/v1/models", method="GET")
        return result

    return EmbeddingChutePack(chute=chute, embed=embed)
