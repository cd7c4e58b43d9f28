"""``chutes run``: serve a chute on this machine, or run one of its jobs (a thin shell over chutes.runtime)."""

from __future__ import annotations

from chutes.cli import app
from chutes.runtime.cli import run

app.command("run")(run)
