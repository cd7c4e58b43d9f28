"""chutes: the SDK for writing, deploying and calling chutes on chutes-nomad."""

__version__ = "0.1.0"
