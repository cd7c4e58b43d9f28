# A NodeSelector with a misspelt and an extra field: the real SDK and server ignore both.
from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="corpus",
    name="typo-selector",
    image="parachutes/python:3.12",
    node_selector=NodeSelector(gpu_count=2, min_vram_gpu_per_gpu=48, dynamic=True),
    concurrency=4,
)


@chute.cord(public_api_path="/ping", public_api_method="GET")
async def ping(self) -> dict:
    return {"pong": True}
