"""The shared core: backoff pacing, blocking-query index rules, health entries, port files, the hinted error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chutes.core.backoff import Backoff, backoff_delay
from chutes.core.blocking import Step, advance, parse_index
from chutes.core.errors import HintedError
from chutes.core.health import by_allocation, health_entries, instances
from chutes.core.portfile import write_port_file

ALLOC = "0f3c1c2e-5b1a-4f7e-9c3d-1a2b3c4d5e6f"


def test_backoff_doubles_within_jitter_bounds_up_to_the_cap() -> None:
    assert [backoff_delay(1, n, 10, rng=lambda: 1.0) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert [backoff_delay(1, n, 10, rng=lambda: 0.0) for n in range(6)] == [0.5, 1, 2, 4, 5, 5]
    assert backoff_delay(1, 10_000, 10, rng=lambda: 1.0) == 10  # no overflow after a long outage


def test_backoff_after_first_failure_starts_at_two_units_and_resets() -> None:
    b = Backoff.after_first_failure(0.25, 10, rng=lambda: 1.0)
    assert [b.next_delay() for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    b.reset()
    assert b.next_delay() == 0.5
    assert Backoff.after_first_failure(5, 4, rng=lambda: 1.0).next_delay() == 4  # a cap below two units wins


def test_backoff_refuses_a_cap_below_its_base() -> None:
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)
    with pytest.raises(ValueError):
        Backoff(base=0, cap=1)


@pytest.mark.parametrize(
    ("previous", "raw", "step"),
    [
        (0, "7", Step(7, False)),  # the first answer is not a change
        (7, "7", Step(7, False)),  # the wait ended without news
        (7, 9, Step(9, True)),
        (9, "3", Step(0, True)),  # backwards: a restarted server, start over
        (0, None, Step(1, False)),  # no index: never 0, which would not block
        (0, "junk", Step(1, False)),
    ],
)
def test_blocking_index_follows_consul_rules(previous: int, raw: object, step: Step) -> None:
    assert advance(previous, raw) == step


def test_parse_index_is_never_negative() -> None:
    assert [parse_index(x) for x in ("12", 5, -3, None, "x")] == [12, 5, 0, 0, 0]


def entry(sid: str, address: str, port: int, node: str = "10.0.0.9", *statuses: str) -> dict[str, object]:
    return {
        "Node": {"Address": node},
        "Service": {"ID": sid, "Address": address, "Port": port},
        "Checks": [{"Status": s} for s in statuses],
    }


def test_instances_fall_back_to_the_node_address_and_skip_the_uncallable() -> None:
    entries = [
        entry("b", "", 80),  # no service address: the node's
        entry("a", "10.0.0.1", 81),
        entry("c", "10.0.0.2", 0),  # no port: cannot be called
        {"Service": {"Address": "10.0.0.3", "Port": 82}},  # no ID: keyed by its address
    ]
    assert instances(entries) == [("10.0.0.3:82", "10.0.0.3", 82), ("a", "10.0.0.1", 81), ("b", "10.0.0.9", 80)]
    assert instances(None) == []


def test_entries_by_allocation_keep_nomad_registrations_with_their_health() -> None:
    entries = [
        entry(f"_nomad-task-{ALLOC}-runtime-chute-x-http", "10.0.0.1", 80, "n", "passing", "critical"),
        entry("someone-else", "10.0.0.2", 80, "n", "passing"),
    ]
    found = by_allocation(entries)
    assert list(found) == [ALLOC]
    assert found[ALLOC].passing is False and found[ALLOC].port == 80
    assert [h.passing for h in health_entries(entries)] == [False, True]


def test_port_files_are_whole_when_they_appear(tmp_path: Path) -> None:
    one, many = tmp_path / "sub" / "port", tmp_path / "ports.json"
    write_port_file(one, 8123)
    write_port_file(many, {"nomad": 1, "consul": 2})
    assert one.read_text() == "8123\n"
    assert json.loads(many.read_text()) == {"nomad": 1, "consul": 2}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["port", "ports.json", "sub"]  # no temporary left


def test_hinted_errors_render_as_the_clis_print_them() -> None:
    assert HintedError("no key", "set CHUTES_X").render("chutes-agent") == "chutes-agent: no key\nHint: set CHUTES_X"
    assert HintedError("no key").render() == "no key"


def test_a_registry_fails_on_a_missing_module_and_imports_the_others() -> None:
    from chutes.core.registry import import_all

    assert [m.__name__ for m in import_all(["chutes.core.backoff"], "T")] == ["chutes.core.backoff"]
    with pytest.raises(ImportError, match=r"T lists chutes\.core\.no_such_module, which does not exist"):
        import_all(["chutes.core.backoff", "chutes.core.no_such_module"], "T")
    with pytest.raises(ImportError, match=r"T lists chutes\.core\.backoff, which defines no 'router'"):
        import_all(["chutes.core.backoff"], "T", require="router")
    assert import_all(["chutes.core.registry"], "T", require="import_all")
