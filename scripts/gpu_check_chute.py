"""gpu_check: a chute that proves it runs on the GPUs the platform allocated to it (used by scripts/gpu_check.sh).

Its cord reports what CUDA sees from inside the instance (device name, memory, the visible-devices variables
the task got) and times a bf16 matrix multiplication, so a real GPU host shows the whole path: NVML inventory →
placement → Nomad allocation → instance → gateway. It needs PyTorch in the instance's Python.
"""

import os
import time

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="demo",
    name="gpu-check",
    image="python:3.12-slim",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=40),
    concurrency=1,
)


@chute.cord(public_api_path="/gpu", method="POST")
async def gpu(self: Chute, size: int = 4096) -> dict:
    import torch  # imported in the cord: the control plane never needs it

    if not torch.cuda.is_available():
        return {"cuda": False, "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    props = torch.cuda.get_device_properties(0)
    return {
        "cuda": True,
        "device": torch.cuda.get_device_name(0),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "device_count": torch.cuda.device_count(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "NVIDIA_VISIBLE_DEVICES": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
        "bf16_tflops": round(20 * 2 * size**3 / seconds / 1e12, 1),
    }
