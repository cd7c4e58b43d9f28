"""``chutes invoke NAME PATH [--data JSON] [--stream]``: call a cord through the gateway."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from chutes.cli import app
from chutes.client import ChutesAPIError, Client
from chutes.commands._common import ApiKey, ApiUrl, GatewayUrl, client, parse_json_option


def _cord(c: Client, chute: str, path: str, username: str | None, stream: bool | None) -> dict[str, Any] | None:
    """The cord at ``path`` if the chute is one the caller can read; None when it cannot be looked up.

    A streaming and a non-streaming cord may share one address: ``stream`` (when given) picks between them.
    """
    if username is not None:
        return None
    try:
        info = c.get_chute(chute)
    except ChutesAPIError:
        return None
    cords = (info.get("manifest") or {}).get("cords") or info.get("cords") or []
    wanted = "/" + path.strip("/")
    found = [c for c in cords if isinstance(c, dict) and wanted in (c.get("public_api_path"), c.get("path"))]
    preferred = [c for c in found if stream is None or bool(c.get("stream")) == stream]
    chosen = preferred or found
    return chosen[0] if chosen else None


@app.command("invoke")
def invoke(
    chute: Annotated[str, typer.Argument(help="The chute's name.")],
    path: Annotated[str, typer.Argument(help="The cord's public path, e.g. /echo.")],
    data: Annotated[str | None, typer.Option("--data", "-d", help="JSON body, @file.json, or - for stdin.")] = None,
    stream: Annotated[
        bool | None, typer.Option("--stream/--no-stream", help="Print frames as they arrive (default: the cord's).")
    ] = None,
    method: Annotated[
        str | None, typer.Option("--method", "-X", help="HTTP method (default: the cord's, else POST).")
    ] = None,
    username: Annotated[
        str | None, typer.Option("--user", "-u", help="The chute's owner, for a chute shared with you.")
    ] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    gateway_url: GatewayUrl = None,
) -> None:
    """Call a cord of a chute through the gateway and print the answer (JSON pretty-printed)."""
    body = parse_json_option(data, "--data")
    with client(api_url, api_key, gateway_url, timeout=600.0) as c:
        cord = _cord(c, chute, path, username, stream)
        verb = (method or (cord or {}).get("public_api_method") or "POST").upper()
        if stream is None:
            stream = bool((cord or {}).get("stream"))
        if body is None and verb != "GET":
            body = {}
        if stream:
            for frame in c.invoke_stream(chute, path, body, username=username, method=verb):
                sys.stdout.write(frame + "\n")
                sys.stdout.flush()
            return
        answer = c.invoke(chute, path, body, username=username, method=verb)
    if "json" in answer.content_type:
        try:
            sys.stdout.write(json.dumps(answer.json(), indent=2) + "\n")
            return
        except ValueError:
            pass
    if answer.content_type.startswith("text/") or not answer.content_type:
        sys.stdout.write(answer.text + ("" if answer.text.endswith("\n") else "\n"))
    else:
        sys.stdout.buffer.write(answer.content)
    sys.stdout.flush()
