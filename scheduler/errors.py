"""The scheduler's domain errors: what went wrong and what to do, without a word of HTTP.

Deploys, scales, job runs, image builds and secrets raise these; ``chutes.scheduler.api.errors`` maps each
kind to an HTTP status once (``STATUS``) and answers ``{"detail": message, "hint": hint, **extra}``, so the
domain code reads the same from the API, the leader's loops and the CLI.
"""

from __future__ import annotations

from typing import Any

from chutes.core.errors import HintedError


class SchedulerError(HintedError):
    """A request the scheduler cannot carry out; ``extra`` adds fields to the answer (e.g. ``unschedulable``)."""

    def __init__(self, message: str, hint: str | None = None, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, hint)
        self.extra = extra or {}

    @property
    def detail(self) -> str:
        return str(self)


class Invalid(SchedulerError):
    """The input cannot be carried out as it is (a manifest Nomad cannot run, a malformed secret)."""


class Forbidden(SchedulerError):
    """The caller may not do this (an image or username of someone else)."""


class NotFound(SchedulerError):
    """What the request names does not exist (for this caller)."""


class Conflict(SchedulerError):
    """The state does not allow it now or at all (a name taken, a chute being deleted, no capacity)."""


class TooLarge(SchedulerError):
    """The input is over a size limit."""


class LimitReached(SchedulerError):
    """The caller has too much under way already; retry later."""


class Unavailable(SchedulerError):
    """The scheduler cannot do it now (not configured, not registered yet, a key missing); retry or fix setup."""


class UpstreamError(SchedulerError):
    """Nomad, Consul or the inventory failed a call the request needed: ``unreachable`` or a bad answer."""

    def __init__(self, service: str, detail: str, *, unreachable: bool, hint: str | None = None) -> None:
        super().__init__(detail, hint)
        self.service = service
        self.unreachable = unreachable
