"""Power-of-two-choices balancing (pure)."""

from __future__ import annotations

import random
from collections import Counter

from chutes.gateway.balancer import NoUpstream, Upstream, choose


def _ups(*loads: int) -> list[Upstream]:
    return [Upstream(f"i{n}", "127.0.0.1", 1000 + n, in_flight=load) for n, load in enumerate(loads)]


def test_no_instances() -> None:
    assert choose([], 4, 0.0) is NoUpstream.NONE


def test_single_eligible_instance_is_chosen() -> None:
    ups = _ups(4, 1)
    assert choose(ups, 4, 0.0) is ups[1]


def test_all_at_concurrency_is_busy() -> None:
    assert choose(_ups(1, 1), 1, 0.0) is NoUpstream.BUSY


def test_avoided_and_cooling_instances_are_skipped() -> None:
    ups = _ups(0, 0, 0)
    ups[1].cooldown_until = 10.0
    assert choose(ups, 1, 5.0, avoid={"i0"}) is ups[2]
    assert choose(ups, 1, 5.0, avoid={"i0", "i2"}) is NoUpstream.UNREACHABLE
    assert choose(ups, 1, 11.0, avoid={"i0", "i2"}) is ups[1]  # cool-down over


def test_busy_wins_over_unreachable_when_some_are_full() -> None:
    ups = _ups(1, 0)
    ups[1].cooldown_until = 10.0
    assert choose(ups, 1, 0.0) is NoUpstream.BUSY


def test_prefers_the_less_loaded_of_two() -> None:
    ups = _ups(3, 0)
    rng = random.Random(1)
    assert all(choose(ups, 8, 0.0, rng=rng) is ups[1] for _ in range(50))


def test_never_picks_the_most_loaded_of_three_or_more() -> None:
    ups = _ups(0, 1, 5)
    rng = random.Random(7)
    picks = Counter(choose(ups, 8, 0.0, rng=rng).key for _ in range(3000))  # type: ignore[union-attr]
    assert picks["i2"] == 0
    assert picks["i0"] > picks["i1"] > 0  # i0 wins both its pairs, i1 only against i2


def _simulate(pick_fn: object, seed: int) -> float:
    """Mean spread (max - min in-flight over 8 instances) while serving calls of random length."""
    ups = _ups(*([0] * 8))
    rng = random.Random(seed)
    active: list[tuple[int, Upstream]] = []
    spread = 0
    steps = 4000
    for step in range(steps):
        still: list[tuple[int, Upstream]] = []
        for end, up in active:
            if end > step:
                still.append((end, up))
            else:
                up.in_flight -= 1
        active = still
        pick = pick_fn(ups, rng)  # type: ignore[operator]
        assert isinstance(pick, Upstream)
        pick.in_flight += 1
        active.append((step + rng.randint(5, 40), pick))
        loads = [u.in_flight for u in ups]
        spread += max(loads) - min(loads)
    return spread / steps


def test_spreads_load_far_more_evenly_than_random_choice() -> None:
    p2c = _simulate(lambda ups, rng: choose(ups, 100, 0.0, rng=rng), 1)
    uniform = _simulate(lambda ups, rng: rng.choice(ups), 1)
    assert p2c < uniform * 0.7, (p2c, uniform)
