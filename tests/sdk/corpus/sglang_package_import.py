from chutes.chute import NodeSelector
from chutes.chute.template import build_sglang_chute

chute = build_sglang_chute(
    username="corpus",
    model_name="Qwen/Qwen2.5-7B-Instruct",
    revision="a09a35458c702b33eeacc393d103063234e8bc28",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=48),
    concurrency=8,
)
