"""vllm_llama: an OpenAI-compatible LLM server from the vLLM template (deployable only on a GPU cluster).

The template builds a chute named after the model with passthrough cords (/v1/chat/completions,
/v1/completions, /v1/models, streaming and not) to a vLLM engine that a startup hook launches on
127.0.0.1. It needs a real NVIDIA GPU with vLLM in the image (the docker driver), so it does not run on
``chutes dev``'s simulated nodes; inspect it anywhere:

    chutes inspect examples/vllm_llama.py:chute
    chutes deploy examples/vllm_llama.py:chute          # on a cluster with 24 GB+ GPUs
    chutes invoke unsloth/Llama-3.2-1B-Instruct /v1/chat/completions \\
        -d '{"model": "unsloth/Llama-3.2-1B-Instruct", "messages": [{"role": "user", "content": "Hi"}]}'

Pin ``revision`` to the Hugging Face commit you tested (https://huggingface.co/<model>/commits/main).
"""

from chutes.chute import NodeSelector
from chutes.chute.template.vllm import build_vllm_chute

chute = build_vllm_chute(
    username="demo",
    model_name="unsloth/Llama-3.2-1B-Instruct",
    revision="5a8abab4a5d6f164389b1079fb721cfab8d7126c",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=24),
    concurrency=16,
    engine_args="--max-model-len 8192 --gpu-memory-utilization 0.9",
    max_instances=2,
    shutdown_after_seconds=900,
)
