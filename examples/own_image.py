"""own_image: a chute whose code needs a package that only its image has (cowsay), built by the platform.

Its base is ``localhost/chutes-base:bookworm`` (Debian bookworm with Python 3.11), not ``python:3.12-slim``,
because this example must build where no public registry is reachable: ``make base-image`` builds that base
locally from Debian's packages, and ``chutes dev`` builds on the same machine, so buildah finds it in local
storage. On a real cluster, use a Python image from your own registry instead
(``.from_base("registry.example.com/python:3.12-slim")``); the platform adds its runtime layer on top either way.

make base-image                                   # once: localhost/chutes-base:bookworm
chutes build examples/own_image.py:chute --wait   # live build output, then <registry>/demo/own-image:0.1@sha256:...
chutes deploy examples/own_image.py:chute         # a cache hit now; the instance runs in a container of that image
chutes invoke own-image /moo -d '{"text": "hi"}'
"""

import socket
from typing import Annotated

from pydantic import Field

from chutes.chute import Chute, NodeSelector
from chutes.image import Image

PACKAGE, VERSION = "cowsay", "6.1"  # pure Python, 25 kB, and not a dependency of the platform

image = (
    Image(username="demo", name="own-image", tag="0.1")
    .from_base("localhost/chutes-base:bookworm")
    .run_command(f"pip install --no-cache-dir {PACKAGE}=={VERSION}")
)

chute = Chute(
    username="demo",
    name="own-image",
    image=image,
    tagline="Runs in the image it declared",
    readme='# own-image\n\n`POST /moo {"text": "hi"}` → a cow, the package\'s version and the hostname it ran on.',
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),
)


@chute.cord(public_api_path="/moo")
async def moo(self: Chute, text: Annotated[str, Field(min_length=1, max_length=200)] = "moo") -> dict[str, object]:
    """The cow says ``text``; the answer also says which version of the package and which host served it."""
    import cowsay  # only the image has it: a host process (raw_exec) fails here with ModuleNotFoundError

    return {
        "package": f"{PACKAGE} {cowsay.__version__}",
        "hostname": socket.gethostname(),
        "cow": cowsay.get_output_string("cow", text),
    }
