"""The gateways' utilisation reports: the sum over gateways (pure) and the store's ownership rule per gateway id."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chutes.scheduler import utilisation
from chutes.scheduler.store import Store
from chutes.scheduler.utilisation import ReceivedReport, UtilisationReport, aggregate


def _report(gateway: str, at: float, chutes: dict[str, object]) -> UtilisationReport:
    return UtilisationReport.model_validate({"gateway_id": gateway, "at": at, "chutes": chutes})


def test_fresh_reports_are_summed_per_chute_and_stale_ones_ignored() -> None:
    now = 1000.0
    reports = [
        ReceivedReport(now - 1, _report("gw-1", 500.0, {
            "c1": {"held": 1, "completed": 4, "last_call_at": 498.0,
                   "instances": {"i1": {"in_flight": 2}, "i2": {"in_flight": 1}}},
        })),
        ReceivedReport(now - 2, _report("gw-2", 900.0, {
            "c1": {"completed": 1, "last_call_at": 899.0, "instances": {"i2": {"in_flight": 3}}},
            "c2": {"instances": {"j1": {"in_flight": 0}}},
        })),
        ReceivedReport(now - 31, _report("gw-gone", 960.0, {"c1": {"instances": {"i9": {"in_flight": 50}}}})),
    ]  # fmt: skip
    summed = aggregate(reports, now, max_age=30)
    assert summed.gateways == 2
    c1 = summed.of("c1")
    assert (c1.in_flight, c1.held, c1.completed, c1.demand) == (6, 1, 5, 7)
    assert c1.instances == {"i1", "i2"}  # distinct instances: two gateways routing to i2 is still one instance
    # gw-1's clock is 500 s behind: its call ended 2 s before its report, i.e. at 997 on the scheduler's clock.
    assert c1.last_call_at == 997.0
    assert summed.of("c2").in_flight == 0 and summed.of("c2").last_call_at is None
    assert summed.of("unknown").demand == 0
    assert aggregate(reports, now + 100, max_age=30).gateways == 0


def test_a_report_is_checked_before_it_is_stored() -> None:
    good = {"gateway_id": "gw-1", "at": 1.0, "chutes": {}}
    for bad in (
        {**good, "gateway_id": "gw 1/../x"},
        {**good, "at": float("nan")},
        {**good, "chutes": {"c1": {"instances": {"i1": {"in_flight": -1}}}}},
        {**good, "chutes": {"x" * 37: {}}},
        {**good, "extra": 1},
    ):
        with pytest.raises(ValidationError):
            UtilisationReport.model_validate(bad)


async def test_a_gateway_id_belongs_to_its_key_while_its_report_is_fresh(store: Store) -> None:
    first = _report("gw-1", 100.0, {"c1": {"instances": {"i1": {"in_flight": 1}}}})
    spoof = _report("gw-1", 100.0, {"c1": {"instances": {"i1": {"in_flight": 0}}}})
    async with store.session() as s:
        assert await utilisation.record(s, "key-a", first, now=100.0, max_age=15)
    async with store.session() as s:
        assert not await utilisation.record(s, "key-b", spoof, now=110.0, max_age=15)  # another key: refused
        assert await utilisation.record(s, "key-a", first, now=110.0, max_age=15)  # its own: replaced
    async with store.session() as s:
        (kept,) = await utilisation.received_since(s, 0)
    assert kept.received_at == 110.0 and kept.report.chutes["c1"].instances["i1"].in_flight == 1
    async with store.session() as s:  # silent for longer than max_age: the id is free
        assert await utilisation.record(s, "key-b", spoof, now=126.0, max_age=15)
        await utilisation.forget_before(s, 120.0)
    async with store.session() as s:
        (taken,) = await utilisation.received_since(s, 0)
        await utilisation.forget_before(s, 127.0)
    assert taken.report.chutes["c1"].instances["i1"].in_flight == 0
    async with store.session() as s:
        assert await utilisation.received_since(s, 0) == []
