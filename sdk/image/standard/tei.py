"""The standard tei image reference (same import path as in Chutes)."""

from chutes.image.standard import TEI

__all__ = ["TEI"]
