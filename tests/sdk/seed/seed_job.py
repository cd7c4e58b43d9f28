# "@chute.job(...)". Adapted: a job lives in a chute of its own (a chute has cords or jobs, not both).
from chutes.chute import Chute

chute = Chute(username="myuser", name="my-trainer", image="nvidia/cuda:12.2-runtime-ubuntu22.04")


@chute.job(timeout=3600, upload=True)
async def train_model(self, training_data: dict):
    # Long-running training job
    pass
