"""The life of one instance: starting → ready → draining → stopped (or failed).

``/_ready`` answers 200 only in ``READY``; cord calls are admitted only in ``READY``. Moves are one-way: an
instance that started draining never becomes ready again, and a failed one never serves.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


_ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.STARTING: frozenset({Phase.READY, Phase.DRAINING, Phase.FAILED}),
    Phase.READY: frozenset({Phase.DRAINING, Phase.FAILED}),
    Phase.DRAINING: frozenset({Phase.STOPPED, Phase.FAILED}),
    Phase.STOPPED: frozenset(),
    Phase.FAILED: frozenset({Phase.STOPPED}),
}


class Lifecycle:
    """The current phase; ``accepting`` is read on every request, so it is a plain attribute."""

    def __init__(self) -> None:
        self.phase = Phase.STARTING
        self.accepting = False

    def _move(self, to: Phase) -> bool:
        if to not in _ALLOWED[self.phase]:
            return False
        self.phase = to
        self.accepting = to is Phase.READY
        return True

    def mark_ready(self) -> bool:
        """Startup finished; False when the instance is already draining or failed."""
        return self._move(Phase.READY)

    def begin_drain(self) -> bool:
        """Stop admitting calls; True only the first time (so one signal starts one drain)."""
        return self._move(Phase.DRAINING)

    def mark_failed(self) -> bool:
        return self._move(Phase.FAILED)

    def mark_stopped(self) -> bool:
        return self._move(Phase.STOPPED)
