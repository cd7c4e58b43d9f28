"""Chute, Cord, Job and NodeSelector: what users write (``from chutes.chute import Chute, NodeSelector``)."""

from chutes.chute.base import Chute, ChutePack
from chutes.chute.cord import Cord
from chutes.chute.errors import ChuteError, DuplicatePath, InvalidPath, ManifestError
from chutes.chute.job import Job, Port
from chutes.chute.node_selector import NodeSelector

__all__ = [
    "Chute",
    "ChuteError",
    "ChutePack",
    "Cord",
    "DuplicatePath",
    "InvalidPath",
    "Job",
    "ManifestError",
    "NodeSelector",
    "Port",
]
