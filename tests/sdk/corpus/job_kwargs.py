# A job that takes **job_data and writes its outputs where the platform says (job_data["output_dir"]).
import os

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="corpus",
    name="render-job",
    image="parachutes/python:3.12",
    node_selector=NodeSelector(gpu_count=1),
)


@chute.job(timeout=600, upload=True)
async def render(self, **job_data):
    path = os.path.join(job_data["output_dir"], "frame.txt")
    with open(path, "w") as out:
        out.write(str(job_data.get("frames", 1)))
    return {"written": path}
