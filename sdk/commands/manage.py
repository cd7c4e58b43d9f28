"""Managing what is deployed: ``chutes chutes list|get|delete|scale|share|instances|events``, ``chutes logs``,
``chutes nodes``, ``chutes usage``, ``chutes pricing`` and ``chutes whoami``.

Each command is one call on ``chutes.client.Client``; ``--json`` prints the API's answer unchanged.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Annotated, Any

import typer
from rich.markup import escape

from chutes.cli import app
from chutes.client import Client, LogLine
from chutes.commands._common import (
    ApiKey,
    ApiUrl,
    AsJson,
    cell,
    client,
    console,
    pick,
    print_json,
    table,
    when,
)

chutes_app = typer.Typer(
    name="chutes", help="Your chutes: list, get, delete, scale, share, instances, events.", no_args_is_help=True
)
app.add_typer(chutes_app, name="chutes")

Ref = Annotated[str, typer.Argument(help="The chute's name (or id).")]


def _gpus(row: dict[str, Any]) -> str:
    selector = (row.get("manifest") or {}).get("node_selector") or row
    eligible = selector.get("eligible_gpus")
    if not eligible:
        return "-"
    return f"{selector.get('gpu_count', 1)}× {cell(eligible)}"


def _price(row: dict[str, Any]) -> str:
    price = row.get("hourly_price_usd")
    return f"${float(price):.2f}/h" if isinstance(price, int | float) else "-"


def named(rows: list[dict[str, Any]], name: str | None) -> list[dict[str, Any]]:
    """The rows whose name contains ``name`` (all of them without one), as Chutes' ``list --name``."""
    return [r for r in rows if not name or name.lower() in str(r.get("name", "")).lower()]


def page_of(rows: list[dict[str, Any]], limit: int, page: int) -> list[dict[str, Any]]:
    """Page ``page`` (from 0) of ``limit`` rows, as Chutes' ``list --limit --page``."""
    return rows[page * limit : (page + 1) * limit]


@chutes_app.command("list")
def list_chutes(
    name: Annotated[str | None, typer.Option("--name", help="Only chutes whose name contains this.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Chutes per page.")] = 25,
    page: Annotated[int, typer.Option("--page", min=0, help="The page to show, from 0.")] = 0,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """List the chutes you own (and those shared with you), 25 a page as in Chutes."""
    with client(api_url, api_key) as c:
        matching = named(c.list_chutes(), name)
    rows = page_of(matching, limit, page)
    if as_json:
        print_json(rows)
        return
    if len(matching) > len(rows):
        console.print(f"[dim]{len(rows)} of {len(matching)} chute(s): page {page}, {limit} a page[/dim]")
    table(
        rows,
        [
            ("NAME", lambda r: r.get("name")),
            ("OWNER", lambda r: r.get("username")),
            ("STATUS", lambda r: r.get("status")),
            ("INSTANCES", lambda r: r.get("desired_instances")),
            ("GPUS", _gpus),
            ("FROM", _price),
            ("VERSION", lambda r: (r.get("version") or "")[:12]),
            ("UPDATED", lambda r: when(pick(r, "updated_at", "created_at"))),
        ],
        title="Chutes",
    )


@chutes_app.command("get")
def get_chute(ref: Ref, api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show one chute: status, version, GPUs, cords and instances."""
    with client(api_url, api_key) as c:
        chute = c.get_chute(ref)
        instances = c.instances(ref)
    if as_json:
        print_json({**chute, "instances": instances} if "instances" not in chute else chute)
        return
    manifest = chute.get("manifest") or {}
    title = f"{chute.get('username')}/{chute.get('name')}"
    console.print(f"[bold]{escape(title)}[/bold]  [dim]{chute.get('chute_id') or ''}[/dim]")
    status = chute.get("status")
    detail = chute.get("status_detail")
    console.print(f"  status     {cell(status)}" + (f" ({cell(detail)})" if detail else ""))
    console.print(f"  version    {cell(chute.get('version'))}")
    ready = sum(1 for i in instances if i.get("state") == "ready" or i.get("healthy") is True)
    console.print(f"  instances  {ready} ready of {cell(chute.get('desired_instances'))} desired")
    console.print(f"  gpus       {_gpus(chute)} ({_price(chute)})")
    for cord in manifest.get("cords") or chute.get("cords") or []:
        stream = " (stream)" if cord.get("stream") else ""
        console.print(f"  cord       {cord.get('public_api_method')} {cord.get('public_api_path')}{stream}")
    for job in manifest.get("jobs") or chute.get("jobs") or []:
        console.print(f"  job        {job.get('name') if isinstance(job, dict) else job}")
    if instances:
        _instances_table(instances)


def _instances_table(rows: list[dict[str, Any]]) -> None:
    table(
        rows,
        [
            ("INSTANCE", lambda r: (pick(r, "instance_id", "alloc_id", "id") or "")[:8]),
            ("STATE", lambda r: pick(r, "state", "status")),
            ("HEALTHY", lambda r: pick(r, "healthy", "health")),
            ("NODE", lambda r: pick(r, "node_id", "node")),
            ("GPUS", lambda r: f"{r.get('gpu_count', '')}× {r.get('gpu_model') or '?'}"),
            ("ADDRESS", lambda r: f"{r['address']}:{r.get('port')}" if r.get("address") else None),
            ("CREATED", lambda r: when(pick(r, "created_at", "started_at"))),
        ],
        title="Instances",
    )


@chutes_app.command("instances")
def instances(ref: Ref, api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List a chute's instances with their health, node and GPU model."""
    with client(api_url, api_key) as c:
        rows = c.instances(ref)
    if as_json:
        print_json(rows)
    else:
        _instances_table(rows)


@chutes_app.command("delete")
def delete_chute(
    ref: Ref,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Delete a chute: stops its instances and removes its job (asks first on a terminal)."""
    if not yes and sys.stdin.isatty() and not typer.confirm(f"Delete chute {ref!r} and stop its instances?"):
        raise typer.Exit(1)
    with client(api_url, api_key) as c:
        c.delete_chute(ref)
    console.print(f"deleted {ref}")


@chutes_app.command("scale")
def scale(
    ref: Ref,
    instances: Annotated[int, typer.Argument(min=0, max=100, help="Desired number of instances.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Set a chute's desired number of instances (0 stops them all; the autoscaler may change it later)."""
    with client(api_url, api_key) as c:
        answer = c.scale_chute(ref, instances)
    if as_json:
        print_json(answer)
    else:
        console.print(f"{ref}: desired instances {answer.get('desired_instances', instances)}")


@chutes_app.command("share")
def share(
    ref: Ref,
    username: Annotated[str, typer.Argument(help="The user to share it with.")],
    remove: Annotated[bool, typer.Option("--remove", help="Stop sharing instead.")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Let another user call your chute (or, with --remove, stop letting them)."""
    with client(api_url, api_key) as c:
        if remove:
            c.unshare_chute(ref, username)
            console.print(f"{ref} is no longer shared with {username}")
        else:
            c.share_chute(ref, username)
            console.print(f"{ref} is now shared with {username}")


@app.command("share")
def share_top_level(
    ref: Annotated[str | None, typer.Argument(help="The chute's name or id (or use --chute-id).")] = None,
    username: Annotated[str | None, typer.Argument(help="The user (or use --user-id).")] = None,
    chute_id: Annotated[str | None, typer.Option("--chute-id", help="The chute: its id or name (Chutes' form).")] = (
        None
    ),
    user_id: Annotated[str | None, typer.Option("--user-id", help="The user: their id or username.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Stop sharing instead.")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Let another user call your chute: `chutes share CHUTE USER`, or Chutes' `--chute-id X --user-id Y`."""
    for positional, option, flag in ((ref, chute_id, "--chute-id"), (username, user_id, "--user-id")):
        if positional is not None and option is not None and positional != option:
            raise typer.BadParameter(f"given twice: {positional!r} and {option!r}", param_hint=flag)
    chute, user = chute_id or ref, user_id or username
    if chute is None or user is None:
        missing = "--chute-id" if chute is None else "--user-id"
        raise typer.BadParameter("name the chute and the user: --chute-id X --user-id Y", param_hint=missing)
    share(chute, user, remove=remove, api_url=api_url, api_key=api_key)


@chutes_app.command("events")
def events(
    ref: Ref,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Show a chute's deployment events (accepted, placed, running, ready, ...)."""
    with client(api_url, api_key) as c:
        for event in c.events(ref, follow=follow):
            if as_json:
                print_json(event)
            else:
                console.print(
                    f"[dim]{when(event.get('created_at'))}[/dim] {cell(pick(event, 'kind', 'type'))}: "
                    f"{cell(event.get('message'))}"
                )


# ---------------------------------------------------------------------------------------------------- top level


@app.command("logs")
def logs(
    ref: Ref,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    instance: Annotated[str | None, typer.Option("--instance", "-i", help="Only this instance (id prefix).")] = None,
    stream: Annotated[str, typer.Option("--stream", help="stdout, stderr or both.")] = "both",
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Print the logs of a chute's instances (through Nomad's logs API)."""
    if stream not in ("stdout", "stderr", "both"):
        raise typer.BadParameter("use stdout, stderr or both", param_hint="--stream")
    streams = ("stdout", "stderr") if stream == "both" else (stream,)
    with client(api_url, api_key) as c:
        if not follow or len(streams) == 1:
            for name in streams:
                for line in c.logs(ref, follow=follow, instance=instance, stream=name):
                    _print_log(line)
            return
        _follow_logs(c, ref, instance, streams)


def _print_log(line: LogLine) -> None:
    prefix = f"{line.instance[:8]} " if line.instance else ""
    if line.stream == "stderr":
        prefix += "err "
    sys.stdout.write(f"{prefix}| {line.line}\n" if prefix else f"{line.line}\n")
    sys.stdout.flush()


def _follow_logs(c: Client, ref: str, instance: str | None, streams: tuple[str, ...]) -> None:
    """Follow several streams at once: one reader thread each, printed by this thread as lines arrive."""
    lines: queue.Queue[LogLine | BaseException | None] = queue.Queue()

    def read(name: str) -> None:
        try:
            for line in c.logs(ref, follow=True, instance=instance, stream=name):
                lines.put(line)
        except BaseException as exc:
            lines.put(exc)
        else:
            lines.put(None)

    for name in streams:
        threading.Thread(target=read, args=(name,), daemon=True, name=f"logs-{name}").start()
    open_streams = len(streams)
    while open_streams:
        item = lines.get()
        if item is None:
            open_streams -= 1
        elif isinstance(item, BaseException):
            raise item
        else:
            _print_log(item)


@app.command("nodes")
def nodes(api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List the GPU nodes: their GPUs, models, free capacity and liveness."""
    with client(api_url, api_key) as c:
        rows = c.nodes()
    if as_json:
        print_json(rows)
        return

    def gpus(row: dict[str, Any]) -> str:
        inventory = row.get("inventory") or row
        items = inventory.get("gpus") or []
        models: dict[str, int] = {}
        for gpu in items:
            key = gpu.get("model") or gpu.get("name") or "?"
            models[key] = models.get(key, 0) + 1
        return ", ".join(f"{n}× {m}" for m, n in models.items()) or "-"

    table(
        rows,
        [
            ("NODE", lambda r: pick(r, "node_id", "id")),
            ("ALIVE", lambda r: pick(r, "alive", "healthy", "status")),
            ("GPUS", gpus),
            ("FREE", lambda r: pick(r, "gpus_free", "free_gpus")),
            ("ELIGIBLE", lambda r: r.get("eligible")),
            ("INSTANCES", lambda r: sum((r.get("instances") or {}).values()) if r.get("instances") else 0),
            ("UPDATED", lambda r: when((r.get("inventory") or r).get("updated_at"))),
        ],
        title="Nodes",
    )


@app.command("usage")
def usage(
    start: Annotated[str | None, typer.Option(help="First UTC day, YYYY-MM-DD (default: --end minus 29).")] = None,
    end: Annotated[str | None, typer.Option(help="Last UTC day, inclusive (default: today).")] = None,
    chute: Annotated[str | None, typer.Option(help="Only this chute of yours.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="(admin) Another user's usage.")] = None,
    everyone: Annotated[bool, typer.Option(help="(admin) Every user's usage.")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Show usage per chute and day: calls, GPU time (by the GPU model it ran on) and its cost."""
    with client(api_url, api_key) as c:
        answer = c.usage(start=start, end=end, chute=chute, username=user, everyone=everyone)
    if as_json:
        print_json(answer)
        return
    table(
        answer.get("lines") or [],
        [
            ("DAY", lambda r: r.get("day")),
            ("USER", lambda r: r.get("username")),
            ("CHUTE", lambda r: r.get("chute_name")),
            ("CALLS", lambda r: r.get("invocations")),
            ("ERRORS", lambda r: r.get("errors")),
            ("GPU SECONDS", _gpu_seconds),
            ("GPU MODELS", lambda r: r.get("gpu_models")),
            ("COST USD", lambda r: r.get("cost_usd")),
        ],
        title=f"Usage {answer.get('start')} to {answer.get('end')}",
    )
    total = answer.get("total") or {}
    console.print(
        f"total: {cell(total.get('invocations'))} calls, {cell(total.get('errors'))} errors, "
        f"{cell(total.get('gpu_seconds'))} GPU-seconds, {cell(total.get('cost_usd'))} {answer.get('currency', 'USD')}"
    )
    if total.get("running_instances"):
        console.print(
            f"{total['running_instances']} instance(s) still running: their GPU time is counted up to now and grows"
        )


def _gpu_seconds(line: dict[str, Any]) -> str:
    """A line's GPU seconds, marked while some of its instances still run (the figure keeps growing)."""
    seconds = str(line.get("gpu_seconds"))
    return f"{seconds} (running)" if line.get("running_instances") else seconds


@app.command("pricing")
def pricing(api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show the hourly price of each GPU model (what GPU time is billed at)."""
    with client(api_url, api_key) as c:
        answer = c.pricing()
    if as_json:
        print_json(answer)
        return
    table(
        answer.get("gpus") or [],
        [
            ("GPU", lambda r: r.get("id")),
            ("VRAM GB", lambda r: r.get("vram_gb")),
            ("USD/HOUR", lambda r: r.get("hourly_usd")),
            ("SCHEDULABLE", lambda r: r.get("schedulable")),
        ],
        title="Pricing",
    )
    if answer.get("billing"):
        console.print(f"[dim]billing: {escape(str(answer['billing']))}[/dim]")


@app.command("whoami")
def whoami(api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show who the configured API key belongs to."""
    with client(api_url, api_key) as c:
        me = c.me()
    if as_json:
        print_json(me)
    else:
        console.print(f"{me.get('username')} ({'admin' if me.get('is_admin') else 'user'}) at {c.api_url}")


# Cheap top-level shortcuts (hidden): `chutes list`, `chutes get NAME`, `chutes delete NAME`, ...
for _name, _func in (
    ("list", list_chutes),
    ("get", get_chute),
    ("delete", delete_chute),
    ("scale", scale),
    ("instances", instances),
    ("events", events),
):
    app.command(_name, hidden=True)(_func)
