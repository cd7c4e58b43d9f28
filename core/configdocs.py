"""The settings tables of docs/configuration.md, generated from the daemons' declarations.

``python -m chutes.core.configdocs`` rewrites them in place (``--check``: exit 1 when they differ). Each table
stands between ``<!-- settings: PROG -->`` and ``<!-- /settings -->``; the prose around it is written by hand.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

from chutes.core.settings import Settings

#: program → (module, attribute) of its Settings table; imported only here, so the core imports no daemon.
TABLES: dict[str, tuple[str, str]] = {
    "chutes-scheduler": ("chutes.scheduler.config", "SETTINGS"),
    "chutes-agent": ("chutes.agent.config", "SETTINGS"),
    "chutes-gateway": ("chutes.gateway.config", "SETTINGS"),
    "chutes-runtime": ("chutes.runtime.config", "SETTINGS"),
    "chutes-devcluster": ("chutes.devcluster.cli", "SETTINGS"),
    "edge-limits": ("chutes.core.edge.limits", "SETTINGS"),
    # The CLI's table in the docs is written by hand (it has the config file's column); listed here so that
    # every declaration is in one place (tests/core/test_settings.py checks each variable is documented).
    "chutes": ("chutes.config", "SETTINGS"),
}
DOC = Path("docs/configuration.md")  # run from the repository root
_BLOCK = re.compile(r"(<!-- settings: (?P<prog>[\w-]+) -->\n)(?P<body>.*?)(<!-- /settings -->)", re.S)


def settings_of(prog: str) -> Settings:
    module, attr = TABLES[prog]
    table = getattr(importlib.import_module(module), attr)
    assert isinstance(table, Settings)
    return table


def render(text: str) -> str:
    """``text`` with every settings block replaced by its table as declared now."""

    def block(m: re.Match[str]) -> str:
        return m.group(1) + settings_of(m.group("prog")).markdown() + m.group(4)

    return _BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chutes.core.configdocs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is not up to date; write nothing")
    parser.add_argument("path", nargs="?", type=Path, default=DOC)
    args = parser.parse_args(argv)
    current = args.path.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{args.path} is out of date: run python -m chutes.core.configdocs", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        args.path.write_text(wanted)
        print(f"rewrote {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
