"""A chute whose Image adds local files (for ``chutes build --dockerfile-only``)."""

from pathlib import Path

from chutes.chute import Chute
from chutes.image import Image

HERE = Path(__file__).parent

image = (
    Image(username="demo", name="with-context", tag="0.1")
    .from_base("python:3.12-slim")
    .add("must_show.py", "/app/must_show.py", build_dir=HERE)
    .add("__init__.py", "/app/__init__.py", build_dir=HERE)
    .with_entrypoint("python", "-m", "chutes.runtime")
)

chute = Chute(username="demo", name="with-context", image=image)


@chute.cord()
def ping(self: Chute) -> str:
    return "pong"
