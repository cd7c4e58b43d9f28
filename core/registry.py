"""Registries of modules (CLI commands, API routers, leader loops, store tables): every name is imported.

A module listed and missing is a bug (a typo, a file left out of a package), so it fails at start with the
registry's name rather than being skipped; an ImportError inside a module propagates as it is.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType


def import_all(names: Iterable[str], registry: str) -> list[ModuleType]:
    """The modules ``names``, imported in order."""
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            raise ImportError(f"{registry} lists {name}, which does not exist") from None
    return modules
