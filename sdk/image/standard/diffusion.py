"""The standard diffusion image reference (same import path as in Chutes)."""

from chutes.image.standard import DIFFUSION

__all__ = ["DIFFUSION"]
