"""Domain exceptions of the SDK: each message says what is wrong, ``hint`` says what to do about it."""

from __future__ import annotations


class ChuteError(ValueError):
    """A chute, cord, job or image that breaks a rule of the platform."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class InvalidPath(ChuteError):
    """A cord path that does not match ``^(/[a-z0-9_]+[a-z0-9-_]*)+$``."""


class DuplicatePath(ChuteError):
    """Two cords of one chute at the same path (or the same public method and path)."""


class ManifestError(ChuteError):
    """A chute that cannot be described by a valid manifest (e.g. it has no cords and no jobs)."""


class CompatibilityWarning(UserWarning):
    """Something the real Chutes SDK accepts that this platform takes differently (ignored, or adjusted)."""
