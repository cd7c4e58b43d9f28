"""``build_vllm_chute``: an OpenAI-compatible LLM served by vLLM (``from chutes.chute.template.vllm import ...``).

The startup hook downloads the model at its locked revision, starts ``vllm.entrypoints.openai.api_server`` on
127.0.0.1:10101 with a random API key (only the chute can call it), waits for ``/v1/models``, and hands the key
to the passthrough cords. vLLM runs in its own process: importing this module needs neither vllm nor torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from chutes.chute.node_selector import NodeSelector
from chutes.chute.template import helpers
from chutes.chute.template._engine import openai_server_command
from chutes.chute.template.llm import ENGINE_PORT, LLMChute, build_llm_chute
from chutes.chute.template.openai import ChatCompletionRequest as ChatCompletionRequest
from chutes.chute.template.openai import ChatCompletionResponse as ChatCompletionResponse
from chutes.chute.template.openai import CompletionRequest as CompletionRequest
from chutes.chute.template.openai import CompletionResponse as CompletionResponse
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
    module = "vllm.entrypoints.openai.api_server"
    return openai_server_command(module, "--model", model_name, served_name, revision, api_key, port, args)


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
    # Every argument is a setting of the chute or its engine: forward them all.
    return build_llm_chute("vllm", vllm_command, locals(), tokenize=True, env={"VLLM_WORKER_MULTIPROC_METHOD": "spawn"})
