"""``chutes inspect FILE:ATTR [--json]``: what a chute would deploy as, without deploying it.

``--json`` prints the manifest (the exact document ``chutes deploy`` uploads); otherwise a summary: image,
eligible GPU models with their prices, the hourly price of one instance, scaling, cords and jobs.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from chutes import gpus
from chutes.cli import app
from chutes.commands._common import AsJson, cell, console, print_json
from chutes.loader import load_chute
from chutes.manifest import Manifest

Ref = Annotated[str, typer.Argument(help="The chute: FILE.py:ATTR (e.g. examples/hello.py:chute) or MODULE:ATTR.")]


def _fields(schema: dict[str, Any] | None) -> str:
    if not schema:
        return "-"
    props = schema.get("properties")
    if not isinstance(props, dict):
        return str(schema.get("title") or schema.get("type") or "-")
    required = set(schema.get("required") or ())
    names = [f"{name}{'' if name in required else '?'}" for name in props]
    return ", ".join(names) or "-"


def summary(manifest: Manifest) -> None:
    """Print a readable description of ``manifest``."""
    sel = manifest.node_selector
    console.print(f"[bold]{manifest.username}/{manifest.name}[/bold]  [dim]{manifest.chute_id}[/dim]")
    if manifest.tagline:
        console.print(manifest.tagline)
    image = manifest.image.ref + (" (built from its Dockerfile)" if manifest.image.dockerfile else " (pre-built)")
    console.print(f"image: {cell(image)}")
    if manifest.standard_template or manifest.revision:
        console.print(f"template: {cell(manifest.standard_template)}  revision: {cell(manifest.revision)}")
    console.print(
        f"GPUs: {sel.gpu_count} x at least {sel.min_vram_gb_per_gpu} GB VRAM"
        + (f", at most ${sel.max_hourly_price_per_gpu:g}/h per GPU" if sel.max_hourly_price_per_gpu else "")
    )
    console.print(f"eligible GPUs: {', '.join(sel.eligible_gpus)}")
    table = Table(show_edge=False, header_style="bold")
    for header in ("GPU", "VRAM GB", "$/h per GPU", f"$/h x {sel.gpu_count}"):
        table.add_column(header)
    for gpu_id in sorted(sel.eligible_gpus, key=lambda g: (gpus.CATALOG[g].hourly_usd, g)):
        gpu = gpus.CATALOG[gpu_id]
        table.add_row(gpu_id, str(gpu.vram_gb), f"{gpu.hourly_usd:.2f}", f"{gpu.hourly_usd * sel.gpu_count:.2f}")
    console.print(table)
    console.print(f"hourly price: ${sel.hourly_price_usd:.2f} per instance (on the cheapest eligible GPU)")
    console.print(
        f"scaling: concurrency {manifest.concurrency}, up to {manifest.max_instances} instance(s), "
        f"threshold {manifest.scaling_threshold:g}, shut down after {manifest.shutdown_after_seconds} s idle"
    )
    if manifest.cords:
        cords = Table(title="cords", show_edge=False, header_style="bold")
        for header in ("name", "public", "stream", "input", "output", "passthrough"):
            cords.add_column(header)
        for cord in manifest.cords:
            upstream = (
                f"{cord.method} 127.0.0.1:{cord.passthrough_port}{cord.passthrough_path}" if cord.passthrough else "-"
            )
            cords.add_row(
                cord.name,
                f"{cord.public_api_method} {cord.public_api_path}",
                cell(cord.stream),
                cell(_fields(cord.input_schema)),
                cell(cord.output_content_type),
                cell(upstream),
            )
        console.print(cords)
    if manifest.jobs:
        jobs = Table(title="jobs", show_edge=False, header_style="bold")
        for header in ("name", "timeout", "upload", "ports"):
            jobs.add_column(header)
        for job in manifest.jobs:
            ports = ", ".join(f"{p.name}:{p.port}/{p.proto}" for p in job.ports) or "-"
            jobs.add_row(job.name, cell(job.timeout), cell(job.upload), ports)
        console.print(jobs)


@app.command("inspect")
def inspect(ref: Ref, as_json: AsJson = False) -> None:
    """Show the manifest of a chute: eligible GPUs, hourly price, cords and jobs."""
    manifest = load_chute(ref).chute.manifest()
    if as_json:
        print_json(manifest.model_dump(mode="json"))
    else:
        summary(manifest)
