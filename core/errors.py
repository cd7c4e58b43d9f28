"""One error base for what a user or an operator can fix: a message, and a hint saying how."""

from __future__ import annotations


class HintedError(Exception):
    """An error whose message says what is wrong and whose ``hint`` (optional) says what to do about it.

    The CLIs print it as ``prog: message`` and ``Hint: ...``; the APIs answer ``{"detail": message, "hint": ...}``.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def render(self, prog: str | None = None) -> str:
        """The lines a command prints for it (without a trailing newline)."""
        head = f"{prog}: {self}" if prog else str(self)
        return f"{head}\nHint: {self.hint}" if self.hint else head
