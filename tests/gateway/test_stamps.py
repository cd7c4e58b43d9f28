"""Signature timestamps: identical calls to one instance never sign alike (pure)."""

from __future__ import annotations

from chutes.gateway.stamps import AHEAD, SignatureStamps


def test_distinct_calls_use_the_current_second() -> None:
    stamps = SignatureStamps()
    assert [stamps.stamp(("i1", n), 100) for n in range(5)] == [100] * 5
    assert stamps.stamp(("i2", 0), 100) == 100  # another instance: its own replay cache
    assert len(stamps) == 0  # nothing repeated, nothing kept beyond this second


def test_repeats_move_ahead_and_never_reuse_a_second() -> None:
    stamps = SignatureStamps()
    key = ("i1", "POST", "/echo", b"same")
    issued: list[int] = []
    for now in (100, 100, 100, 101, 101, 102, 130, 130):
        t = stamps.stamp(key, now)
        assert t is not None and now <= t <= now + AHEAD
        issued.append(t)
    assert len(set(issued)) == len(issued), issued
    assert issued[:3] == [100, 101, 102]


def test_a_burst_runs_out_then_refills_about_one_per_second() -> None:
    stamps = SignatureStamps()
    key = "k"
    burst = [stamps.stamp(key, 500) for _ in range(AHEAD + 5)]
    assert burst.count(None) == 4  # 500 … 500 + AHEAD
    assert stamps.stamp(key, 501) == 500 + AHEAD + 1  # the window moved on by a second
    assert stamps.stamp(key, 501) is None


def test_old_repeats_are_forgotten() -> None:
    stamps = SignatureStamps()
    stamps.stamp("k", 10)
    stamps.stamp("k", 10)
    assert len(stamps) == 1
    stamps.stamp("other", 12)  # its stamps (10, 11) are all in the past now
    assert len(stamps) == 0
    assert stamps.stamp("k", 12) == 12
