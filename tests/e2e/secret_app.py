"""The chute the secrets tests deploy (``APP``, written to a file) and a polling helper."""

from __future__ import annotations

import httpx
import nomad

from chutes.client import ChutesAPIError

# A chute whose cord answers the length and sha256 of $HF_TOKEN (and its pid), and a job chute doing the same.
APP = """\
import hashlib
import os

from chutes.chute import Chute, NodeSelector

chute = Chute(username="demo", name="secret-echo", image="python:3.12", node_selector=NodeSelector(gpu_count=1),
              max_instances=2)
batch = Chute(username="demo", name="secret-batch", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


def describe():
    value = os.environ["HF_TOKEN"]
    return {"length": len(value), "sha256": hashlib.sha256(value.encode()).hexdigest(), "pid": os.getpid(),
            "api_key": len(os.environ.get("API_KEY", ""))}


@chute.cord(public_api_path="/token")
async def token(self) -> dict:
    return describe()


@batch.job(timeout=60)
async def check(self) -> dict:
    # The run's own token too (it is refused once the run has finished): the test looks for it in the jobs.
    return {**describe(), "run_token": os.environ.get("CHUTES_RUN_TOKEN", "")}
"""


#: What a check may raise while the stack is still converging (``poll_until`` asks again).
RETRIED = (ChutesAPIError, httpx.HTTPError, nomad.api.exceptions.BaseNomadException)
