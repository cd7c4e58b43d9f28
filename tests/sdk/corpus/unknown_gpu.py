# The real SDK accepts any GPU id client-side; this platform places chutes only on models it knows.
from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="corpus",
    name="unknown-gpu",
    image="parachutes/python:3.12",
    node_selector=NodeSelector(gpu_count=1, include=["h100", "rtx4090ti"]),
)


@chute.cord()
async def noop(self) -> dict:
    return {}
