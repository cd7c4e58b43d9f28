"""``chutes build FILE:ATTR --dockerfile-only``: write the chute's Dockerfile and list its build context.

Building and pushing the image is left to the user's own builder (``docker build``, buildah, CI): the
command prints the line to run.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from chutes.chute.errors import ChuteError
from chutes.cli import app
from chutes.commands._common import console
from chutes.commands.inspect import Ref
from chutes.image import Image
from chutes.loader import load_chute


@app.command("build")
def build(
    ref: Ref,
    dockerfile_only: Annotated[
        bool, typer.Option("--dockerfile-only", help="Write the Dockerfile and list the build context.")
    ] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the Dockerfile.")] = Path("Dockerfile"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write the Dockerfile of a chute's Image (building the image itself is up to your builder)."""
    chute = load_chute(ref).chute
    image = chute.image
    if not isinstance(image, Image):
        raise ChuteError(
            f"chute {chute.name!r} runs the pre-built image {image!r}; there is nothing to build",
            hint="pass image=Image(...) to Chute to describe an image to build",
        )
    if not dockerfile_only:
        raise ChuteError(
            "chutes-nomad does not run image builds itself",
            hint=f"run `chutes build {ref} --dockerfile-only`, then build it with docker or buildah",
        )
    if output.exists() and not force:
        raise ChuteError(f"{output} already exists", hint="pass --force to overwrite it, or --output another path")
    output.parent.mkdir(parents=True, exist_ok=True)
    text = str(image) + "\n"
    output.write_text(text, encoding="utf-8")
    context = image.build_dir or Path.cwd()
    console.print(f"wrote {output} ({len(image.directives)} instructions) for image {image.ref}")
    console.print(f"build context: {context}")
    if image.context_files:
        for name in image.context_files:
            console.print(f"  {name}")
    else:
        console.print("  (no local files: the Dockerfile adds nothing from disk)")
    command = ["docker", "build", "-t", image.ref, "-f", str(output), str(context)]
    console.print("build it with: " + " ".join(shlex.quote(part) for part in command), soft_wrap=True)
