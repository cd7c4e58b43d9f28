"""``python -m chutes.runtime``: what a chute's Nomad task runs (see ``chutes.runtime.cli``)."""

from chutes.runtime.cli import main

main()
