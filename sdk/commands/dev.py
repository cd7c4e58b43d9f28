"""``chutes dev``: run the whole platform on this machine until Ctrl-C (or SIGTERM), then stop all of it."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from chutes import config
from chutes.cli import app
from chutes.commands._common import console
from chutes.dev.containers import MODES
from chutes.dev.nodes import parse_node
from chutes.dev.registry import BUILDS_MODES
from chutes.dev.stack import DEFAULT_USERNAME, DevStack, DevStackError, StackInfo, supervise


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _summary(info: StackInfo, config_file: Path | None) -> None:
    console.print()
    console.print("[bold green]chutes dev is up[/bold green]")
    console.print(f"  scheduler (API)  {info.api_url}")
    console.print(f"  gateway          {info.gateway_url}")
    console.print(f"  dashboard        {info.api_url}/ui/")
    console.print(f"  Nomad API        {info.nomad_addr}")
    console.print(f"  Consul API       {info.consul_addr}")
    console.print(f"  user             {info.username}")
    console.print(f"  API key          {info.api_key}")
    console.print(f"  data, logs       {info.data_dir}")
    console.print(f"  cluster tokens   {info.data_dir}/nomad_token, {info.data_dir}/consul_token (ACLs are on)")
    if info.containers:
        console.print("  instances        in containers (podman)")
    else:
        console.print("  instances        host processes (raw_exec: trusted code only)")
    if info.builds:
        console.print(f"  image builds     on: buildah, pushed to the registry {info.registry}")
    else:
        console.print("  image builds     off (needs buildah, docker-registry and curl; see --builds)")
    if config_file is not None:
        console.print(f"  config written   {config_file}")
    console.print()
    console.print("Try:  chutes deploy examples/hello.py:chute")
    console.print('      chutes invoke hello /hello -d \'{"name": "Ada"}\'')
    console.print("Press Ctrl-C to stop everything.")


@app.command("dev")
def dev(
    node: Annotated[
        list[str] | None,
        typer.Option(
            "--node",
            help="A simulated node NAME=MODEL:COUNT (repeatable); replaces a default node of the same name.",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Keep state here between runs (default: a temporary directory).")
    ] = None,
    username: Annotated[str, typer.Option("--username", help="The user whose API key you get.")] = DEFAULT_USERNAME,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Use simulated nodes even when this machine has NVIDIA GPUs.")
    ] = False,
    write_config: Annotated[
        bool,
        typer.Option("--write-config/--no-write-config", help="Write the API URL and key to the config file."),
    ] = True,
    ports_file: Annotated[
        Path | None, typer.Option("--ports-file", help="Write the chosen ports here as JSON once everything is up.")
    ] = None,
    ready_file: Annotated[
        Path | None,
        typer.Option("--ready-file", help="Write addresses and the API key here as JSON (mode 0600) once up."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each part may take to become healthy.")] = 60.0,
    domain: Annotated[
        str | None,
        typer.Option("--domain", help="Wildcard domain: the gateway also serves https://<user>-<chute>.<domain>/..."),
    ] = None,
    containers: Annotated[
        str,
        typer.Option(
            "--containers",
            help="Run instances in their images with podman: auto (when podman and buildah are installed), on, off.",
        ),
    ] = "auto",
    builds: Annotated[
        str,
        typer.Option(
            "--builds",
            help="Build images (`chutes build`) with buildah and a local registry: auto (when installed), on, off.",
        ),
    ] = "auto",
) -> None:
    """Run the devcluster, one agent per node, the scheduler and the gateway on this machine.

    A part that dies is restarted (with back-off) while the others keep running; with --data-dir, the next
    run keeps the same ports, so deployed chutes answer again without a redeploy.
    """
    if builds not in BUILDS_MODES:
        raise DevStackError(f"--builds {builds!r} is not a mode", hint="use auto, on or off")
    if containers not in MODES:
        raise DevStackError(f"--containers {containers!r} is not a mode", hint="use auto, on or off")
    nodes = [parse_node(value) for value in node or []]
    if data_dir is not None:
        data_dir = data_dir.expanduser()
    stack = DevStack(
        data_dir=data_dir,
        nodes=nodes,
        username=username,
        use_local_gpus=not simulate,
        timeout=timeout,
        echo=lambda line: console.print(line, highlight=False),
        domain=domain,
        containers=containers,
        builds=builds,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        info = stack.start()
        config_file: Path | None = None
        if write_config:
            config_file = config.save(
                config.Settings(api_url=info.api_url, gateway_url=info.gateway_url, api_key=info.api_key)
            )
        if ports_file is not None:
            ports = {
                "scheduler": int(info.api_url.rsplit(":", 1)[1]),
                "gateway": int(info.gateway_url.rsplit(":", 1)[1]),
                "nomad": int(info.nomad_addr.rsplit(":", 1)[1]),
                "consul": int(info.consul_addr.rsplit(":", 1)[1]),
            }
            _write_private(ports_file, json.dumps(ports))
        if ready_file is not None:
            _write_private(ready_file, info.to_json())
        _summary(info, config_file)
        supervise(stack)  # a part that dies is restarted; only Ctrl-C (or SIGTERM) ends this
    except KeyboardInterrupt:
        console.print("\nstopping ...")
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
        for path in (ready_file, ports_file):
            if path is not None:
                path.unlink(missing_ok=True)
    console.print("stopped")
    sys.stdout.flush()
