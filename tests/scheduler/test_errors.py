"""Domain errors carry no HTTP; the API maps each kind to one status (pure: no server)."""

from __future__ import annotations

from chutes.core.errors import HintedError
from chutes.scheduler import errors
from chutes.scheduler.api.errors import STATUS, status_of


def test_each_kind_has_its_status_and_a_subclass_inherits_it() -> None:
    expected = {
        errors.Invalid: 422, errors.Forbidden: 403, errors.NotFound: 404, errors.Conflict: 409,
        errors.TooLarge: 413, errors.LimitReached: 429, errors.Unavailable: 503,
    }  # fmt: skip
    assert expected == STATUS
    for kind, status in expected.items():
        exc = kind("what went wrong", "what to do")
        assert isinstance(exc, HintedError) and exc.hint == "what to do" and exc.detail == "what went wrong"
        assert status_of(exc) == status

    class NameTaken(errors.Conflict):
        pass

    assert status_of(NameTaken("taken")) == 409
    assert status_of(errors.SchedulerError("a kind nobody mapped")) == 500
    unschedulable = errors.Conflict("no node fits", extra={"unschedulable": {"nodes": 0}})
    assert unschedulable.extra == {"unschedulable": {"nodes": 0}}
