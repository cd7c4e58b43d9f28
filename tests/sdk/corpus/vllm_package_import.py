# An LLM chute built from the template imported at package level, plus what such files import beside it.
from chutes.chute import NodeSelector
from chutes.chute.template import build_vllm_chute
from chutes.chute.template.helpers import (
    get_current_hf_commit,
    monitor_engine,
    set_default_cache_dirs,
    set_nccl_flags,
    validate_auth,
    warmup_model,
)
from chutes.chute.template.vllm import ChatCompletionRequest, CompletionRequest

HELPERS = (get_current_hf_commit, monitor_engine, set_default_cache_dirs, set_nccl_flags, validate_auth, warmup_model)
REQUESTS = (ChatCompletionRequest, CompletionRequest)

chute = build_vllm_chute(
    username="corpus",
    readme="unsloth/Llama-3.2-1B-Instruct",
    model_name="unsloth/Llama-3.2-1B-Instruct",
    revision="9b58d4a36161a1e49ecf0a69d20b2736fef8e438",
    concurrency=16,
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=24),
    engine_args="--max-model-len 16384",
    tee=False,
)
