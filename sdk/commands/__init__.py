"""Command groups of the ``chutes`` CLI; each module registers its commands on ``chutes.cli.app``."""
