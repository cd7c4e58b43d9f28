"""Chute, Cord, Job and NodeSelector: what users write (``from chutes.chute import Chute, NodeSelector``).

``chutes.manifest`` imports ``chutes.chute.node_selector``, and ``Chute`` builds manifests; so everything but
``NodeSelector`` is imported on first use, which keeps ``import chutes.manifest`` free of an import cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chutes.chute.node_selector import NodeSelector

if TYPE_CHECKING:
    from chutes.chute.base import Chute, ChutePack
    from chutes.chute.cord import Cord
    from chutes.chute.errors import ChuteError, CompatibilityWarning, DuplicatePath, InvalidPath, ManifestError
    from chutes.chute.job import Job, Port

_LAZY = {
    "Chute": "chutes.chute.base",
    "ChutePack": "chutes.chute.base",
    "Cord": "chutes.chute.cord",
    "ChuteError": "chutes.chute.errors",
    "CompatibilityWarning": "chutes.chute.errors",
    "DuplicatePath": "chutes.chute.errors",
    "InvalidPath": "chutes.chute.errors",
    "ManifestError": "chutes.chute.errors",
    "Job": "chutes.chute.job",
    "Port": "chutes.chute.job",
}

__all__ = [
    "Chute",
    "ChuteError",
    "ChutePack",
    "CompatibilityWarning",
    "Cord",
    "DuplicatePath",
    "InvalidPath",
    "Job",
    "ManifestError",
    "NodeSelector",
    "Port",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chutes.chute' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
