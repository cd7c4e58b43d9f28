"""Registries of modules (CLI commands, API routers, leader loops, store tables): every name is imported.

A module listed and missing is a bug (a typo, a file left out of a package), so it fails at start with the
registry's name rather than being skipped; an ImportError inside a module propagates as it is. A registry whose
modules must each define something (``require``: a router, a loop factory) fails the same way on a module that
does not, instead of leaving it out in silence.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType


def import_all(names: Iterable[str], registry: str, require: str | None = None) -> list[ModuleType]:
    """The modules ``names``, imported in order; with ``require``, each must define that attribute."""
    modules = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            raise ImportError(f"{registry} lists {name}, which does not exist") from None
        if require is not None and not hasattr(module, require):
            raise ImportError(f"{registry} lists {name}, which defines no {require!r}")
        modules.append(module)
    return modules
