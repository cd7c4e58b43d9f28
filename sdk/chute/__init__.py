"""Chute, Cord, Job and NodeSelector: what users write (``from chutes.chute import Chute, NodeSelector``)."""

from chutes.chute.node_selector import NodeSelector

__all__ = ["NodeSelector"]
