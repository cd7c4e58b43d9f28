"""``build_sglang_chute``: an OpenAI-compatible LLM served by SGLang, with the vLLM template's signature.

Same cords as the vLLM template except tokenize/detokenize; they carry ``sglang_passthrough=True`` (kept in the
cord's ``session_kwargs``, as in Chutes). SGLang runs in its own process on 127.0.0.1:10101.
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
from chutes.image.standard import SGLANG

SGLangChute = LLMChute


def sglang_command(
    model_name: str,
    served_name: str,
    revision: str,
    api_key: str,
    gpu_count: int,
    engine_args: Sequence[str] = (),
    port: int = ENGINE_PORT,
) -> list[str]:
    """The command line that starts SGLang's server for a chute."""
    args = helpers.with_tensor_parallel(list(engine_args), gpu_count, flag="--tp")
    module = "sglang.launch_server"
    return openai_server_command(module, "--model-path", model_name, served_name, revision, api_key, port, args)


def build_sglang_chute(
    username: str,
    model_name: str,
    node_selector: NodeSelector,
    image: str | Image = SGLANG,
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
    """A chute named after ``model_name`` that serves it with SGLang (revision required)."""
    # Every argument is a setting of the chute or its engine: forward them all.
    return build_llm_chute("sglang", sglang_command, locals(), tokenize=False, sglang_passthrough=True)
