"""The autoscaling decision on synthetic load series (pure: no sockets, no clock)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from chutes.scheduler.autoscale import (
    AutoscaleParams,
    ChuteLoad,
    LoadSample,
    ScalingPolicy,
    decide,
    instances_for,
    mean_in_flight,
)

PARAMS = AutoscaleParams(interval=10, long_window=300, down_ratio=0.8, scale_down_delay=120)


@dataclass
class Sim:
    """A chute under an offered load: instances start ``startup`` seconds after being asked for."""

    policy: ScalingPolicy
    desired: int = 1
    startup: float = 20.0
    last_request_at: float | None = 0.0
    active_since: float | None = 0.0
    last_change_at: float | None = None
    samples: list[LoadSample] = field(default_factory=list)
    history: list[tuple[float, int]] = field(default_factory=list)  # (time, desired) after each evaluation
    pending: list[float] = field(default_factory=list)  # ready times of instances being started
    ready: int = 1

    def run(self, load: Callable[[float], float], start: float, end: float) -> None:
        t = start
        while t <= end:
            self.ready += sum(1 for r in self.pending if r <= t)
            self.pending = [r for r in self.pending if r > t]
            self.ready = min(self.ready, self.desired)
            offered = load(t)
            in_flight = min(offered, self.ready * self.policy.concurrency)
            if offered > 0:
                self.last_request_at = t
            self.samples.append(LoadSample(t, in_flight, self.ready))
            self.samples = [s for s in self.samples if s.at > t - PARAMS.long_window - PARAMS.interval]
            state = ChuteLoad(
                self.desired, self.ready, self.samples, self.last_request_at, self.active_since, self.last_change_at
            )
            decision = decide(self.policy, state, t, PARAMS)
            if decision.target != self.desired:
                if decision.target > self.desired:
                    self.pending.extend([t + self.startup] * (decision.target - self.desired - len(self.pending)))
                else:
                    self.ready = min(self.ready, decision.target)
                    self.pending = self.pending[: max(0, decision.target - self.ready)]
                self.desired = decision.target
                self.last_change_at = t
            self.history.append((t, self.desired))
            t += PARAMS.interval

    def changes(self, after: float) -> int:
        counts = [d for t, d in self.history if t >= after]
        return sum(1 for a, b in itertools.pairwise(counts) if a != b)


POLICY = ScalingPolicy(concurrency=4, max_instances=10, scaling_threshold=0.75, shutdown_after_seconds=600)


def test_steady_loads_settle_and_never_flap() -> None:
    rng = random.Random(5)
    for level in (0.5, 2.0, 2.9, 3.0, 3.1, 6.0, 11.0, 20.0):
        sim = Sim(POLICY)
        sim.run(lambda _t, lv=level: max(0.0, lv * rng.uniform(0.9, 1.1)), 0, 3600)
        assert sim.changes(after=900) == 0, (level, sim.history[-20:])
        final = sim.desired
        assert final >= 1
        # the settled count carries the load below the threshold ...
        assert level * 1.1 / (final * POLICY.concurrency) < 1.0 or final == POLICY.max_instances
        # ... and is not wasteful: one fewer would have been at or near the threshold
        if final > 1:
            one_fewer = level / ((final - 1) * POLICY.concurrency)
            assert one_fewer >= POLICY.scaling_threshold * PARAMS.down_ratio * 0.95, (level, final)


def test_a_burst_scales_up_at_the_next_evaluation() -> None:
    sim = Sim(POLICY)
    sim.run(lambda t: 0.5 if t < 1000 else 12.0, 0, 1000 + PARAMS.interval - 1)
    before = [d for t, d in sim.history if t < 1000]
    assert set(before) == {1}
    at_burst = [d for t, d in sim.history if t >= 1000]
    assert at_burst and at_burst[0] > 1  # the first evaluation that sees the burst asks for more


def test_scale_up_is_bounded_by_max_instances() -> None:
    sim = Sim(POLICY)
    sim.run(lambda _t: 1000.0, 0, 1200)
    assert max(d for _, d in sim.history) == POLICY.max_instances
    assert all(d <= POLICY.max_instances for _, d in sim.history)


def test_above_max_instances_is_brought_back() -> None:
    state = ChuteLoad(desired=15, ready=15, samples=[LoadSample(0, 100, 15)], last_request_at=0, active_since=0)
    assert decide(POLICY, state, 0, PARAMS).target == POLICY.max_instances


def test_idle_goes_to_zero_after_shutdown_after_seconds_and_not_before() -> None:
    sim = Sim(POLICY)
    sim.run(lambda t: 2.0 if t < 500 else 0.0, 0, 500 + 600 + 2 * PARAMS.interval)
    last_call = max(t for t, _ in sim.history if t < 500)
    assert all(d > 0 for t, d in sim.history if t < last_call + POLICY.shutdown_after_seconds)
    zero_at = min(t for t, d in sim.history if d == 0)
    assert zero_at - last_call - POLICY.shutdown_after_seconds < PARAMS.interval


def test_zero_stays_zero() -> None:
    state = ChuteLoad(desired=0, ready=0, samples=[], last_request_at=None, active_since=None)
    assert decide(POLICY, state, 0, PARAMS).target == 0


def test_calls_held_by_the_gateways_wake_a_chute_at_zero_and_keep_it_up() -> None:
    state = ChuteLoad(desired=0, ready=0, samples=[], last_request_at=None, active_since=None, held=3)
    decision = decide(POLICY, state, 0, PARAMS)
    assert decision.target == 1 and "3 call(s) held" in decision.reason  # one: the rules above take it from there
    # Up, idle for ages by its last call, but calls wait for its first instance: not stopped.
    state = ChuteLoad(desired=1, ready=0, samples=[], last_request_at=0.0, active_since=0.0, held=1)
    assert decide(POLICY, state, 10_000.0, PARAMS).target == 1


def test_a_freshly_woken_chute_is_not_stopped_before_its_first_call() -> None:
    # calls last seen long ago, but the chute was just woken (active_since): it stays up
    state = ChuteLoad(desired=1, ready=0, samples=[], last_request_at=0.0, active_since=10_000.0)
    assert decide(POLICY, state, 10_010.0, PARAMS).target == 1


def test_in_flight_calls_keep_a_quiet_chute_up() -> None:
    # a long call started long ago: no new call for ages, but one is still running
    samples = [LoadSample(5000.0, 1.0, 1)]
    state = ChuteLoad(desired=1, ready=1, samples=samples, last_request_at=0.0, active_since=0.0)
    assert decide(POLICY, state, 5000.0, PARAMS).target == 1


def test_no_scale_up_while_instances_are_starting() -> None:
    samples = [LoadSample(100.0, 4.0, 1)]
    state = ChuteLoad(desired=3, ready=1, samples=samples, last_request_at=100.0, active_since=0.0)
    decision = decide(POLICY, state, 100.0, PARAMS)
    assert decision.target == 3 and "waiting" in decision.reason


def test_load_drop_scales_down_gradually_with_a_delay() -> None:
    sim = Sim(POLICY)
    sim.run(lambda t: 20.0 if t < 1200 else 2.0, 0, 3600)
    peak = max(d for t, d in sim.history if t < 1200)
    assert peak >= 7
    assert sim.desired == 1  # 2 calls in flight on one instance of concurrency 4: 0.5, under 0.75 × 0.8
    downs = [t for (t, d), (_, prev) in zip(sim.history[1:], sim.history, strict=False) if d < prev]
    assert downs and min(downs) >= 1200
    assert all(b - a >= PARAMS.scale_down_delay for a, b in itertools.pairwise(downs))


def test_mean_in_flight_and_instances_for() -> None:
    samples = [LoadSample(0, 2, 1), LoadSample(10, 6, 2), LoadSample(20, 0, 0)]
    assert mean_in_flight(samples, -1) == 8 / 3
    assert mean_in_flight(samples, 0) == 3.0  # the window is (since, now]
    assert mean_in_flight(samples, 20) is None
    assert instances_for(3.0, 4, 0.75) == 2  # one instance would be at 0.75: not below the threshold
    assert instances_for(2.9, 4, 0.75) == 1
    assert instances_for(0.0, 4, 0.75) == 1
