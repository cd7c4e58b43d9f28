"""The standard vllm image reference (same import path as in Chutes)."""

from chutes.image.standard import VLLM

__all__ = ["VLLM"]
