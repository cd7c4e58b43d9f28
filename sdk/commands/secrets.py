"""Secrets of chutes: ``chutes secrets create|list|delete``.

A secret reaches the chute's instances as an environment variable (``os.environ["HF_TOKEN"]``); its value is
sealed at rest and never shown again, by the CLI or the API.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from chutes.cli import app
from chutes.commands._common import ApiKey, ApiUrl, AsJson, client, console, print_json, table, when

secrets_app = typer.Typer(
    name="secrets", help="Secrets of your chutes (environment variables): create, list, delete.", no_args_is_help=True
)
app.add_typer(secrets_app, name="secrets")

Chute = Annotated[str, typer.Option("--chute", "-c", help="The chute: its id, name or slug (deployed or not yet).")]


def _value(value: str | None, from_file: Path | None) -> str:
    if value is not None and from_file is not None:
        raise typer.BadParameter("give --value or --from-file, not both", param_hint="--value")
    if value is not None:
        return value
    if from_file is not None:
        try:
            return from_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read {from_file}: {exc}", param_hint="--from-file") from None
    if sys.stdin.isatty():
        return str(typer.prompt("Value", hide_input=True))
    text = sys.stdin.read()
    # `echo $TOKEN | chutes secrets create ...` adds one newline that is not part of the value.
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


@secrets_app.command("create")
def create_secret(
    name: Annotated[str, typer.Argument(help="The environment variable name, e.g. HF_TOKEN.")],
    chute: Chute,
    value: Annotated[
        str | None, typer.Option("--value", help="The value (visible in your shell history: prefer stdin).")
    ] = None,
    from_file: Annotated[Path | None, typer.Option("--from-file", help="Read the value from this file.")] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Create or replace a secret; without --value or --from-file it is read from stdin (or prompted for).

    A deployed chute's instances restart with the new value, one at a time."""
    secret = _value(value, from_file)
    with client(api_url, api_key) as c:
        answer = c.create_secret(name, secret, chute=chute)
    if as_json:
        print_json(answer)
        return
    verb = "created" if answer.get("created") else "replaced"
    console.print(f"secret {answer.get('name')} of {answer.get('chute_name')} {verb}")
    if answer.get("applied"):
        console.print("[dim]its instances restart with it, one at a time (follow `chutes chutes events`)[/dim]")
    else:
        console.print("[dim]not deployed yet: the chute gets it when you deploy it[/dim]")


@secrets_app.command("list")
def list_secrets(
    chute: Annotated[str | None, typer.Option("--chute", "-c", help="Only this chute's secrets.")] = None,
    everyone: Annotated[bool, typer.Option("--all", help="Every user's secret names (admins).")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """List secrets: names, chutes and times, never values."""
    with client(api_url, api_key) as c:
        rows = c.list_secrets(chute, everyone=everyone)
    if as_json:
        print_json(rows)
        return
    columns = [
        ("NAME", lambda r: r.get("name")),
        ("CHUTE", lambda r: r.get("chute_name")),
        ("CREATED", lambda r: when(r.get("created_at"))),
        ("UPDATED", lambda r: when(r.get("updated_at"))),
    ]
    if everyone:
        columns.insert(1, ("USER", lambda r: r.get("username")))
    table(rows, columns, title="Secrets")


@secrets_app.command("delete")
def delete_secret(
    name: Annotated[str, typer.Argument(help="The secret's name.")],
    chute: Chute,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Delete a secret; a deployed chute's instances restart without it."""
    with client(api_url, api_key) as c:
        c.delete_secret(name, chute=chute)
    console.print(f"deleted secret {name} of {chute}")
