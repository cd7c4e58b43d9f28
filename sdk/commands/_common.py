"""What the client-side commands share: connection options, the client, output as tables or ``--json``.

Errors are not handled here: commands raise domain exceptions (``ChutesAPIError``, ``ConfigError``, ...) with
a ``hint``, and ``chutes.cli.main`` turns them into one readable line plus the hint.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from chutes import config
from chutes.client import Client

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

ApiUrl = Annotated[
    str | None, typer.Option("--api-url", help="Scheduler URL (default: $CHUTES_SCHEDULER_URL or the config file).")
]
ApiKey = Annotated[str | None, typer.Option("--api-key", help="API key (default: $CHUTES_API_KEY or the config file).")]
GatewayUrl = Annotated[
    str | None, typer.Option("--gateway-url", help="Gateway URL (default: $CHUTES_GATEWAY_URL or the config file).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def settings(api_url: str | None, api_key: str | None, gateway_url: str | None = None) -> config.Settings:
    return config.load(api_url=api_url, api_key=api_key, gateway_url=gateway_url)


def client(api_url: str | None, api_key: str | None, gateway_url: str | None = None, **kwargs: Any) -> Client:
    """A client from flags, environment and config file (in that order of precedence)."""
    return Client.from_settings(settings(api_url, api_key, gateway_url), **kwargs)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


Column = tuple[str, Callable[[dict[str, Any]], Any]]


def table(rows: Iterable[dict[str, Any]], columns: Sequence[Column], *, title: str | None = None) -> None:
    """Print rows as a table; ``columns`` are (header, getter) pairs."""
    out = Table(title=title, show_edge=False, header_style="bold")
    for header, _ in columns:
        # Ids stay whole on one line, to be copied; other cells wrap.
        out.add_column(header, no_wrap=header in ("ID", "INSTANCE", "NODE"), overflow="fold")
    count = 0
    for row in rows:
        out.add_row(*(cell(getter(row)) for _, getter in columns))
        count += 1
    if count:
        console.print(out)
    else:
        console.print(f"[dim]no {title.lower() if title else 'rows'}[/dim]")


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value).replace("[", "\\[")


def when(timestamp: Any) -> str:
    """A Unix timestamp (or ISO string) as local time, for tables."""
    if isinstance(timestamp, int | float):
        return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
    return str(timestamp) if timestamp else "-"


def pick(row: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present in ``row`` (field names that differ between API versions)."""
    for key in keys:
        if row.get(key) is not None:
            return row[key]
    return None


def parse_json_option(value: str | None, option: str) -> Any:
    """A JSON value from a flag; ``@file`` reads it from a file and ``-`` from stdin."""
    if value is None:
        return None
    text = value
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {value[1:]}: {exc.strerror}", param_hint=option) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON ({exc})", param_hint=option) from None
