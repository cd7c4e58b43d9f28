"""The standard sglang image reference (same import path as in Chutes)."""

from chutes.image.standard import SGLANG

__all__ = ["SGLANG"]
