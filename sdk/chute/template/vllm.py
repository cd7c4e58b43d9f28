"""``build_vllm_chute``: an OpenAI-compatible LLM served by vLLM (``from chutes.chute.template.vllm import ...``).

The startup hook downloads the model at its locked revision, starts ``vllm.entrypoints.openai.api_server`` on
127.0.0.1:10101 with a random API key (only the chute can call it), waits for ``/v1/models``, and hands the key
to the passthrough cords. vLLM runs in its own process: importing this module needs neither vllm nor torch.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Sequence

from chutes.chute.base import Chute
from chutes.chute.node_selector import NodeSelector
from chutes.chute.template import helpers
from chutes.chute.template.llm import ENGINE_PORT, FORBIDDEN_ENGINE_ARGS, LLMChute, add_openai_cords
from chutes.image import Image
from chutes.image.standard import VLLM

VLLMChute = LLMChute


def vllm_command(
    model_name: str,
    served_name: str,
    revision: str,
    api_key: str,
    gpu_count: int,
    engine_args: Sequence[str] = (),
    port: int = ENGINE_PORT,
) -> list[str]:
    """The command line that starts vLLM's OpenAI server for a chute."""
    args = helpers.with_tensor_parallel(list(engine_args), gpu_count)
    if "--enable-prompt-tokens-details" not in args:
        args.append("--enable-prompt-tokens-details")
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
        "--host",
        helpers.ENGINE_HOST,
        "--port",
        str(port),
        *args,
    ]


def build_vllm_chute(
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
    allow_external_egress: bool = False,
    tee: bool = False,
) -> LLMChute:
    """A chute named after ``model_name`` that serves it with vLLM (revision required)."""
    locked = helpers.require_revision("build_vllm_chute", model_name, revision)
    args = helpers.parse_engine_args("build_vllm_chute", engine_args, FORBIDDEN_ENGINE_ARGS)
    chute = Chute(
        username=username,
        name=model_name,
        image=image,
        tagline=tagline,
        readme=readme,
        node_selector=node_selector,
        concurrency=concurrency,
        standard_template="vllm",
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
    async def start_vllm(self: Chute) -> None:
        await helpers.download_model(model_name, locked)
        api_key = secrets.token_urlsafe(32)
        command = vllm_command(model_name, self.name, locked, api_key, helpers.visible_gpu_count(self), args)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
        headers = {"Authorization": f"Bearer {api_key}"}
        probe = helpers.http_probe(f"http://{helpers.ENGINE_HOST}:{ENGINE_PORT}/v1/models", headers)
        engine["process"] = await helpers.launch_engine(command, probe, env=env)
        self.passthrough_headers.update(headers)

    @chute.on_shutdown()
    async def stop_vllm(self: Chute) -> None:
        await helpers.stop_engine(engine.pop("process", None))

    cords = add_openai_cords(chute, tokenize=True)
    return LLMChute(
        chute=chute,
        chat=cords["chat"],
        chat_stream=cords["chat_stream"],
        completion=cords["completion"],
        completion_stream=cords["completion_stream"],
        models=cords["get_models"],
    )
