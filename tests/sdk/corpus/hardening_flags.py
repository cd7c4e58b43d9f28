# Chute arguments of the real SDK's container hardening: lock_modules (a bool there), tee, encrypted_fs.
from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="corpus",
    name="locked-down",
    image="parachutes/python:3.12",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=80, include=["h100", "h200"]),
    lock_modules=True,
    tee=True,
    encrypted_fs=True,
    allow_external_egress=False,
)


@chute.cord(public_api_path="/v1/run")
def run(self, n: int = 1) -> list[int]:
    return list(range(n))
