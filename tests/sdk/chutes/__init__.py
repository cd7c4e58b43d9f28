"""Chute modules the SDK tests load by file reference (``tests/sdk/chutes/X.py:chute``)."""
