"""Chute modules that tests start in a subprocess (``python -m chutes.runtime tests/runtime/chutes/X.py:chute``)."""
