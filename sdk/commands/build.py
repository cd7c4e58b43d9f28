"""``chutes build FILE:ATTR``: build the chute's image on the platform; ``chutes images``: list, get, logs, delete.

``chutes build`` packs the build context (the Dockerfile rendered from the chute's ``Image`` and every file its
``add()`` instructions copy, nothing from outside the chute's folder), uploads it, and with ``--wait`` follows
the build live: the build's steps and output lines as they happen, then the image reference with its digest.
A failed build exits 1 with the failing step and its last lines. The same context built already is a cache
hit: nothing is built again. ``--dockerfile-only`` keeps the old behaviour: write the Dockerfile for your own
builder.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from chutes.chute.errors import ChuteError
from chutes.cli import app
from chutes.client import Client
from chutes.commands._common import ApiKey, ApiUrl, AsJson, cell, client, console, err_console, print_json, table
from chutes.commands.inspect import Ref
from chutes.image import Image
from chutes.loader import load_chute

images_app = typer.Typer(help="Images built by the platform: list, get, logs, delete.", no_args_is_help=True)
app.add_typer(images_app, name="images")

_STEP = re.compile(r"^(==> |STEP \d+/\d+: )")


class BuildFailed(ChuteError):
    """The image's build failed; the message has the failing step and its last output lines."""


def show_line(line: str) -> None:
    """One line of a build's output: the steps stand out, the rest is dim."""
    if _STEP.match(line):
        console.print(f"[bold]{cell(line)}[/bold]", soft_wrap=True)
    else:
        console.print(f"  [dim]{cell(line)}[/dim]", soft_wrap=True)


def build_and_report(api: Client, chute: Any, *, rebuild: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Build (or find built) a chute's image, showing progress; BuildFailed when the build failed."""
    seen = {"lines": 0}

    def on_line(line: str) -> None:
        seen["lines"] += 1
        if not quiet:
            show_line(line)

    image = api.build(chute, wait=True, rebuild=rebuild, on_line=on_line)
    if not quiet and image.get("cache_hit") and image.get("status") == "ready":
        console.print(f"image {image['name']}:{image['tag']} is built already (cache hit, nothing rebuilt)")
    if image.get("status") == "failed":
        raise BuildFailed(
            f"the build of image {image['name']}:{image['tag']} ({image['image_id'][:12]}) failed: "
            f"{image.get('error')}",
            hint=f"fix the Image and build again; the whole log: chutes images logs {image['image_id'][:12]}"
            + ("; it failed before: `chutes build --rebuild` tries again" if image.get("cache_hit") else ""),
        )
    return image


@app.command("build")
def build(
    ref: Ref,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the build live until it ends.")] = False,
    as_json: AsJson = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build again an image whose build failed.")] = False,
    dockerfile_only: Annotated[
        bool, typer.Option("--dockerfile-only", help="Only write the Dockerfile and list the build context.")
    ] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the Dockerfile.")] = Path("Dockerfile"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Build a chute's image on the platform (a string image gets the platform's runtime layer on top)."""
    chute = load_chute(ref).chute
    if dockerfile_only:
        _dockerfile_only(chute, output, force)
        return
    with client(api_url, api_key, timeout=120.0) as api:
        if not wait:
            image = api.build(chute, rebuild=rebuild)
        else:
            try:
                image = build_and_report(api, chute, rebuild=rebuild, quiet=as_json)
            except BuildFailed as exc:
                if as_json:
                    print_json({"status": "failed", "error": str(exc)})
                raise
    if as_json:
        print_json(image)
        return
    if image.get("status") == "ready":
        console.print(image["ref"], soft_wrap=True)
    else:
        console.print(f"image {image['image_id'][:12]} is {image['status']}; follow it: chutes images logs "
                      f"{image['image_id'][:12]} --follow")  # fmt: skip


def _dockerfile_only(chute: Any, output: Path, force: bool) -> None:
    image = chute.image
    if not isinstance(image, Image):
        raise ChuteError(
            f"chute {chute.name!r} runs the pre-built image {image!r}; there is no Dockerfile of its own",
            hint="pass image=Image(...) to Chute to describe an image to build",
        )
    if output.exists() and not force:
        raise ChuteError(f"{output} already exists", hint="pass --force to overwrite it, or --output another path")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(str(image) + "\n", encoding="utf-8")
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


COLUMNS = [
    ("ID", lambda r: r["image_id"][:12]),
    ("IMAGE", lambda r: f"{r['name']}:{r['tag']}"),
    ("STATUS", lambda r: r["status"]),
    ("BUILD S", lambda r: r.get("build_seconds")),
    ("REF", lambda r: r.get("ref")),
]


@images_app.command("list")
def list_images(as_json: AsJson = False, api_url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """Your images, newest first."""
    with client(api_url, api_key) as api:
        rows = api.list_images()
    if as_json:
        print_json(rows)
    else:
        table(rows, COLUMNS, title="Images")


@images_app.command("get")
def get_image(
    image: Annotated[str, typer.Argument(help="Image id (or a unique prefix), or NAME:TAG.")],
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """One image: status, reference with digest, timings, error."""
    with client(api_url, api_key) as api:
        row = api.get_image(image)
    if as_json:
        print_json(row)
        return
    for key in ("image_id", "name", "tag", "status", "ref", "runtime_version", "build_seconds", "error"):
        console.print(f"{key:16} {cell(row.get(key))}", soft_wrap=True)


@images_app.command("logs")
def image_logs(
    image: Annotated[str, typer.Argument(help="Image id (or a unique prefix), or NAME:TAG.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming while it builds.")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """The build's output."""
    with client(api_url, api_key) as api:
        for line in api.image_logs(image, follow=follow):
            console.print(cell(line), soft_wrap=True)


@images_app.command("delete")
def delete_image(
    image: Annotated[str, typer.Argument(help="Image id (or a unique prefix), or NAME:TAG.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Forget an image (its build stops; the registry keeps what was pushed)."""
    with client(api_url, api_key) as api:
        api.delete_image(image)
    err_console.print(f"deleted image {image}")
