"""API keys and users: ``chutes keys create|list|delete`` and, for admins, ``chutes users create``."""

from __future__ import annotations

from typing import Annotated

import typer

from chutes.cli import app
from chutes.commands._common import ApiKey, ApiUrl, AsJson, client, console, pick, print_json, table, when

keys_app = typer.Typer(name="keys", help="Your API keys: create, list, delete.", no_args_is_help=True)
users_app = typer.Typer(name="users", help="Users (admin only): create.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")


@keys_app.command("create")
def create_key(
    name: Annotated[str | None, typer.Option("--name", "-n", help="A label to recognise the key by.")] = None,
    role: Annotated[
        str | None, typer.Option("--role", help="user (default); admins may create gateway or admin keys.")
    ] = None,
    admin: Annotated[
        bool,
        typer.Option(
            "--admin", help="Chutes' full-access key: every key here has full access to your account (no scopes)."
        ),
    ] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Create an API key; its secret is printed once and never again."""
    if admin and role not in (None, "user"):
        raise typer.BadParameter(
            "--admin is Chutes' full-access key of your own account (role user); --role picks a platform role",
            param_hint="--admin",
        )
    with client(api_url, api_key) as c:
        answer = c.create_key(name, role=role)
    if as_json:
        print_json(answer)
        return
    console.print(f"key id  {pick(answer, 'key_id', 'id')}")
    console.print(f"api key [bold]{answer.get('api_key')}[/bold]")
    console.print("[dim]Store it now: it is shown only once.[/dim]")


@keys_app.command("list")
def list_keys(api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List your API keys (ids and prefixes, never the secrets)."""
    with client(api_url, api_key) as c:
        rows = c.list_keys()
    if as_json:
        print_json(rows)
        return
    table(
        rows,
        [
            ("ID", lambda r: pick(r, "key_id", "id")),
            ("NAME", lambda r: r.get("name")),
            ("PREFIX", lambda r: r.get("prefix")),
            ("ROLE", lambda r: r.get("role")),
            ("CREATED", lambda r: when(r.get("created_at"))),
            ("REVOKED", lambda r: when(r.get("revoked_at")) if r.get("revoked_at") else ""),
        ],
        title="Keys",
    )


@keys_app.command("delete")
def delete_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `chutes keys list`).")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Revoke an API key."""
    with client(api_url, api_key) as c:
        c.delete_key(key_id)
    console.print(f"revoked {key_id}")


@users_app.command("create")
def create_user(
    username: Annotated[str, typer.Argument(help="Lower-case letters, digits, '_' and '-'.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """(admin) Create a user and print its first API key (shown once)."""
    with client(api_url, api_key) as c:
        answer = c.create_user(username)
    if as_json:
        print_json(answer)
        return
    console.print(f"user    {answer.get('username')} ({answer.get('user_id')})")
    console.print(f"api key [bold]{answer.get('api_key')}[/bold]")
    console.print("[dim]Store it now: it is shown only once.[/dim]")
