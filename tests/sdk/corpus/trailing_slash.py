# Two cords whose public paths differ only by a trailing slash.
from chutes.chute import Chute

chute = Chute(username="corpus", name="slashes", image="parachutes/python:3.12")


@chute.cord(public_api_path="/generate")
async def generate(self, prompt: str) -> dict:
    return {"prompt": prompt}


@chute.cord(public_api_path="/generate/")
async def generate_slash(self, prompt: str) -> dict:
    return {"prompt": prompt, "slash": True}
