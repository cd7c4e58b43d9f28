# A custom image the way public chute files write it: multi-line RUN commands with backslash-newline
# continuations, with_python() at its default, and an entrypoint given as one list.
from chutes.chute import Chute, NodeSelector
from chutes.image import Image

image = (
    Image(username="corpus", name="whisper-server", tag="0.2.1", readme="speech to text")
    .from_base("parachutes/python:3.12")
    .with_python()
    .set_user("root")
    .run_command(
        """
        apt-get update && \\
        apt-get install -y --no-install-recommends ffmpeg libsndfile1 && \\
        # clean up the package lists
        rm -rf /var/lib/apt/lists/*
        """
    )
    .run_command("pip install --no-cache-dir \\\n    openai-whisper==20240930 \\\n    soundfile")
    .set_workdir("/app")
    .with_entrypoint(["python", "-m", "chutes"])
)

chute = Chute(
    username="corpus",
    name="whisper-server",
    image=image,
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=24),
)


@chute.cord(public_api_path="/transcribe")
async def transcribe(self, url: str, language: str = "en") -> dict:
    return {"url": url, "language": language}
