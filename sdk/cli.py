"""The ``chutes`` command line: a thin shell over ``chutes.client`` (DESIGN.md, "How the code is written").

Each command group lives in its own module under ``chutes.commands`` and registers itself on ``app`` when
imported, so the parts of the platform can add commands without touching one shared file.
"""

from __future__ import annotations

import os
import sys

import typer

from chutes.core.registry import import_all

app = typer.Typer(
    name="chutes",
    help="Write, run, deploy and call chutes on a self-hosted Nomad + Consul GPU cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules under chutes.commands that register commands on `app` when imported; a missing one stops the CLI with
# its name (chutes.core.registry): every one ships with the package, so it can only be a typo.
COMMAND_MODULES = ("inspect", "build", "run", "dev", "deploy", "manage", "invoke", "keys", "jobs", "secrets")


def _register_commands() -> None:
    import_all((f"chutes.commands.{name}" for name in COMMAND_MODULES), "chutes.cli.COMMAND_MODULES")


def main() -> None:
    """Console-script entry point: an error is one line plus a hint (``--debug`` or CHUTES_DEBUG=1: traceback)."""
    from chutes.config import SETTINGS

    debug = "--debug" in sys.argv[1:] or SETTINGS.from_env(os.environ, names=["debug"])[0].get("debug", "0") != "0"
    if "--debug" in sys.argv[1:]:
        sys.argv.remove("--debug")
    _register_commands()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        if hasattr(exc, "hint"):  # a domain error: its message and hint say what to do
            hint = exc.hint
            sys.stderr.write(f"Error: {exc}\n" + (f"Hint: {hint}\n" if hint else ""))
        else:
            sys.stderr.write(f"Error: {type(exc).__name__}: {exc}\nHint: run again with --debug for the traceback\n")
        sys.exit(1)
