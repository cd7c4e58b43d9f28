"""``chutes deploy FILE:ATTR``: upload a chute, then follow its deployment live until it is ready.

Progress comes from the scheduler's event stream (accepted → registered → placed on a node with its GPUs →
running → ready). It ends with the invocation URL of each cord and a curl line to paste; an unschedulable chute
ends with the reasons and exit status 1. Chutes' own flags are taken: ``--public`` (every user may call it; the
platform lets admins set it) and ``--accept-fee`` (nothing to accept: this platform charges no deployment fee).
On ``chutes dev`` a chute written for another username is deployed for a local user of that name and shared
with you; it is then followed and named by its id.
"""

from __future__ import annotations

import json
import shlex
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from chutes.cli import app
from chutes.client import ChutesAPIError, Client, invocation_path
from chutes.commands._common import (
    ApiKey,
    ApiUrl,
    AsJson,
    GatewayUrl,
    cell,
    client,
    console,
    err_console,
    print_json,
)
from chutes.commands.build import build_and_report
from chutes.loader import load_chute
from chutes.manifest import CordSpec, Manifest

# Event kinds that end a deployment, one way or the other.
READY_KINDS = frozenset({"ready"})
FAILED_KINDS = frozenset({"unschedulable", "failed", "error", "crashed", "deleted"})


class DeployFailed(Exception):
    """The deployment ended without a ready instance; the message says why."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def example_body(schema: dict[str, Any] | None) -> dict[str, Any]:
    """A JSON body that satisfies a cord's input schema well enough for a first try (defaults, or samples)."""
    if not schema:
        return {}
    defs = schema.get("$defs", {})
    out: dict[str, Any] = {}
    required = set(schema.get("required", []))
    for name, prop in (schema.get("properties") or {}).items():
        if name not in required and "default" not in prop:
            continue
        out[name] = _sample(prop, defs, name)
    return out


def _sample(prop: dict[str, Any], defs: dict[str, Any], name: str, depth: int = 0) -> Any:
    if "default" in prop:
        return prop["default"]
    if prop.get("examples"):
        return prop["examples"][0]
    if prop.get("enum"):
        return prop["enum"][0]
    ref = prop.get("$ref", "")
    if ref.startswith("#/$defs/") and depth < 3:
        return example_body(defs.get(ref.removeprefix("#/$defs/"), {})) or {}
    options = prop.get("anyOf") or prop.get("oneOf")
    if options:
        return _sample(options[0], defs, name, depth + 1)
    kind = prop.get("type")
    if kind == "string":
        return "hello" if name in ("text", "prompt", "input", "message", "name") else "string"
    if kind == "integer":
        return max(1, int(prop.get("minimum", 1)))
    if kind == "number":
        return float(prop.get("minimum", 1.0))
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    return {}


def curl_line(url: str, api_key: str, cord: CordSpec) -> str:
    """A curl command that calls ``cord`` at ``url``."""
    parts = ["curl"]
    if cord.stream:
        parts.append("-N")
    if cord.public_api_method != "POST":
        parts += ["-X", cord.public_api_method]
    parts += [shlex.quote(url), "-H", shlex.quote(f"Authorization: Bearer {api_key}")]
    if cord.public_api_method != "GET":
        body = json.dumps(example_body(cord.input_schema))
        parts += ["-H", "'Content-Type: application/json'", "-d", shlex.quote(body)]
    return " ".join(parts)


def _last_event_id(c: Client, ref: str) -> int:
    try:
        events = list(c.events(ref))
    except ChutesAPIError as exc:
        if exc.status == 404:
            return 0
        raise
    return max((int(e.get("id", 0) or 0) for e in events), default=0)


def _describe(event: dict[str, Any]) -> str:
    message = str(event.get("message") or "")
    data = event.get("data") or {}
    reasons = data.get("reasons") if isinstance(data, dict) else None
    if isinstance(reasons, dict) and reasons and not any(str(r) in message for r in reasons):
        message += " (" + ", ".join(f"{n} {r}" for r, n in reasons.items()) + ")"
    elif isinstance(reasons, list) and reasons and not any(str(r) in message for r in reasons):
        message += " (" + "; ".join(str(r) for r in reasons) + ")"
    return message


def follow(
    c: Client,
    ref: str,
    version: str | None,
    after: int,
    timeout: float,
    out: Console = console,
    started: float | None = None,
) -> dict[str, Any]:
    """Print the deployment's events as they come; return the ready event or raise DeployFailed.

    Elapsed times count from ``started`` (a ``time.monotonic()`` value: when the upload began).
    """
    start = time.monotonic() if started is None else started
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        for event in c.events(ref, follow=True, after=after, timeout=left):
            after = max(after, int(event.get("id", 0) or 0))
            if version and event.get("version") not in (None, version):
                continue  # an event of the previous version (still being replaced)
            kind = str(event.get("type") or event.get("kind") or "event")
            elapsed = f"[dim]\\[{time.monotonic() - start:6.1f}s][/dim]"
            out.print(f"{elapsed} [bold]{escape(kind):<13}[/bold] {escape(_describe(event))}")
            if kind in READY_KINDS:
                return event
            if kind in FAILED_KINDS:
                raise DeployFailed(f"deployment {kind}: {_describe(event)}", hint=_failure_hint(kind, ref))
        # The stream ended (timeout, or the server closed it): look at the chute before listening again.
        status = str(c.get_chute(ref).get("status", ""))
        if status in READY_KINDS:
            return {"type": "ready"}
        time.sleep(0.2)
    raise DeployFailed(
        f"no ready instance after {timeout:.0f}s",
        hint=f"it may still come up: watch `chutes chutes events {ref} --follow` and `chutes logs {ref}`",
    )


def _show_log_tail(c: Client, ref: str, lines: int = 15) -> None:
    """The last lines an instance wrote, to explain a failed start without a second command."""
    tail: list[str] = []
    try:
        for stream in ("stdout", "stderr"):
            tail.extend(f"{stream}: {line.line}" for line in c.logs(ref, stream=stream))
    except ChutesAPIError:
        return
    if tail:
        console.print(f"[dim]last lines of the instance log (`chutes logs {ref}` shows all):[/dim]")
        for line in tail[-lines:]:
            console.print(f"  {line}", markup=False, highlight=False)


def _failure_hint(kind: str, ref: str) -> str:
    if kind == "unschedulable":
        return "loosen the NodeSelector (gpu_count, min_vram_gb_per_gpu, include/exclude, price cap) or add nodes"
    return f"see `chutes logs {ref}` for the instance's output"


@app.command("deploy")
def deploy(
    ref: Annotated[str, typer.Argument(help="The chute to deploy, as FILE:ATTR or module:attr.")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the deployment until it is ready.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a ready instance.")] = 600.0,
    public: Annotated[
        bool, typer.Option("--public", help="Let every user call it (as in Chutes; admins only here).")
    ] = False,
    accept_fee: Annotated[
        bool,
        typer.Option("--accept-fee", help="Accepted as in Chutes; this platform charges no deployment fee."),
    ] = False,
    build: Annotated[
        str,
        typer.Option(
            "--build",
            help="Build the chute's image first: auto (an Image, when the platform builds images), on (also the "
            "runtime layer on a string image), off.",
        ),
    ] = "auto",
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    gateway_url: GatewayUrl = None,
    as_json: AsJson = False,
) -> None:
    """Upload a chute and follow its deployment until an instance is ready."""
    if build not in ("auto", "on", "off"):
        raise DeployFailed(f"--build {build!r} is not a mode", hint="use auto, on or off")
    loaded = load_chute(ref).chute
    manifest = loaded.manifest()
    selector = manifest.node_selector
    if not as_json:
        console.print(
            f"Deploying [bold]{manifest.username}/{manifest.name}[/bold]: {len(manifest.cords)} cord(s), "
            f"{len(manifest.jobs)} job(s), {selector.gpu_count}× GPU from {cell(selector.eligible_gpus)} "
            f"(from ${selector.hourly_price_usd:.2f}/h)"
        )
    with client(api_url, api_key, gateway_url) as c:
        # By id: it names the chute whoever owns it (on `chutes dev`, a local user of the file's username).
        after = _last_event_id(c, manifest.chute_id) if wait else 0
        started = time.monotonic()
        image_id = None
        if _wants_build(c, loaded, build):
            if not as_json:
                console.print("building its image first ...")
            image = build_and_report(c, loaded, quiet=as_json)
            image_id = str(image["image_id"])
            if not as_json:
                console.print(f"image: {image['ref']}", soft_wrap=True)
        chute = c.deploy(loaded, public=public, image=image_id)
        name = str(chute.get("name") or manifest.name)
        owner = str(chute.get("username") or manifest.username)
        if owner != c.username():
            name = str(chute.get("chute_id") or manifest.chute_id)
        version = str(chute.get("version") or "") or None
        if not as_json:
            console.print(f"uploaded version {(version or '?')[:12]} ({time.monotonic() - started:.1f}s)")
            if name != manifest.name:
                console.print(
                    f"owner: the local user [bold]{escape(owner)}[/bold] (the chute's username); it is shared with "
                    f"you: name it by its id, {name}"
                )
            placement = chute.get("placement") or {}
            if placement.get("node_id"):
                console.print(
                    f"placement: node [bold]{escape(str(placement['node_id']))}[/bold], "
                    f"{placement.get('gpu_count', '?')}× {placement.get('gpu_model', '?')} "
                    f"at ${float(placement.get('price_per_gpu') or 0):.2f}/h per GPU"
                )
        if wait and manifest.cords:
            try:
                follow(c, name, version, after, timeout, out=err_console if as_json else console, started=started)
            except DeployFailed as exc:
                if not str(exc).startswith("deployment unschedulable"):
                    _show_log_tail(c, name)
                raise
        if as_json:
            print_json(c.get_chute(name) if wait else chute)
            return
        if wait and manifest.cords:
            console.print(f"[green]Ready[/green] in {time.monotonic() - started:.1f}s.")
        _print_addresses(c, manifest, name)


def _wants_build(c: Client, chute: Any, mode: str) -> bool:
    """Whether to build before deploying: ``on`` always; ``auto`` for an Image when the platform builds images."""
    from chutes.image import Image

    if mode == "off" or (mode == "auto" and not isinstance(chute.image, Image)):
        return False
    # Without builds on the platform the chute runs as before (auto); `on` then gets the API's refusal.
    return mode == "on" or c.builds_available()


def _print_addresses(c: Client, manifest: Manifest, ref: str) -> None:
    """How to call it; ``ref`` names the chute for the CLI (its name, or its id when another user owns it)."""
    if not manifest.cords:
        for job in manifest.jobs:
            console.print(f"run it:  chutes jobs run {shlex.quote(ref)} {job.name} --input '{{}}'")
        return
    if not c.gateway_url:
        console.print("[dim]no gateway URL configured: set gateway_url to see invocation addresses[/dim]")
        return
    console.print("Call it:")
    for cord in manifest.cords:
        url = c.gateway_url + invocation_path(manifest.username, manifest.name, cord.public_api_path)
        stream = " (streaming)" if cord.stream else ""
        console.print(f"  {cord.public_api_method} {url}{stream}")
        console.print(f"    {curl_line(url, c.api_key, cord)}", soft_wrap=True)
        data = json.dumps(example_body(cord.input_schema))
        stream_flag = " --stream" if cord.stream else ""
        invoke = f"chutes invoke {shlex.quote(manifest.name)} {cord.public_api_path} -d {shlex.quote(data)}"
        if ref != manifest.name:  # another user owns it: the gateway address names them
            invoke += f" --user {shlex.quote(manifest.username)}"
        console.print(f"    {invoke}{stream_flag}", soft_wrap=True)
