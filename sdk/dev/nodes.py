"""Simulated nodes of the dev stack: ``NAME=MODEL:COUNT`` (e.g. ``gpu-a=h100_sxm:2``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from chutes import gpus

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class NodeSpecError(ValueError):
    """A ``--node`` value that cannot describe a node."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class NodeSpec:
    """One node of the dev stack: simulated GPUs of one catalog model, or (``model`` None) this machine's GPUs."""

    name: str
    model: str | None
    count: int

    @property
    def simulated(self) -> bool:
        return self.model is not None

    def flag(self) -> str:
        """The value of the devcluster's ``--node`` flag for this node."""
        return f"{self.name}={self.model}:{self.count}"

    def __str__(self) -> str:
        if self.model is None:
            return f"{self.name} (this machine's {self.count} GPU(s), NVML)"
        return f"{self.name} ({self.count}× {self.model}, simulated)"


# Two simulated nodes: a cheap 24 GB model (where examples/hello.py lands: any GPU >= 16 GB, cheapest first) and an
# 80 GB one for bigger chutes; a default NodeSelector (1 GPU, >= 16 GB) fits either and ranks L4 first.
DEFAULT_NODES: tuple[NodeSpec, ...] = (NodeSpec("gpu-a", "l4", 2), NodeSpec("gpu-b", "a100", 2))


def parse_node(value: str) -> NodeSpec:
    """Parse ``NAME=MODEL:COUNT``; the model must be a catalog id and the count 1-8."""
    name, sep, rest = value.partition("=")
    model, sep2, count_text = rest.partition(":")
    hint = "use NAME=MODEL:COUNT, e.g. gpu-a=h100_sxm:2 (models: `chutes pricing` or chutes.gpus.CATALOG)"
    if not sep or not sep2:
        raise NodeSpecError(f"invalid node {value!r}", hint=hint)
    name, model = name.strip().lower(), model.strip().lower()
    if not _NAME_RE.fullmatch(name):
        raise NodeSpecError(f"invalid node name {name!r}: use lower-case letters, digits, '_' and '-'", hint=hint)
    try:
        gpus.get(model)
    except (KeyError, ValueError):
        valid = ", ".join(sorted(gpus.CATALOG))
        raise NodeSpecError(f"unknown GPU model {model!r}", hint=f"use one of: {valid}") from None
    try:
        count = int(count_text)
    except ValueError:
        raise NodeSpecError(f"invalid GPU count {count_text!r} in {value!r}", hint=hint) from None
    if not 1 <= count <= 8:
        raise NodeSpecError(f"GPU count must be 1-8, got {count}", hint=hint)
    return NodeSpec(name, model, count)


def merge(defaults: tuple[NodeSpec, ...], extra: list[NodeSpec]) -> list[NodeSpec]:
    """``extra`` replaces the nodes of ``defaults`` with the same name and adds the others, in order."""
    by_name = {node.name: node for node in defaults}
    for node in extra:
        by_name[node.name] = node
    return list(by_name.values())
