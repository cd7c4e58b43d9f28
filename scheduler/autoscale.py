"""Autoscaling decisions (pure): how many instances a chute should run, from its recent load.

Utilisation = calls in flight ÷ (ready instances × concurrency), where the calls in flight are those the gateways
report (in flight on an instance, or held waiting for one: ``chutes.scheduler.utilisation``), averaged over a
short window (the last evaluation interval: a burst is seen at the next evaluation) and a long one (which
smooths noise), each divided by the capacity ready now: "would what is running now carry the load of that
window?". (Dividing old load by old capacity would keep scaling up after a ramp has been met.) The rules,
in order:

==========================  ================================================================================
situation                   target
==========================  ================================================================================
above ``max_instances``     ``max_instances``
at zero                     zero; one when the gateways hold calls for it (a gateway also wakes the chute
                            itself at once; this covers a wake that was lost)
idle                        zero, once no call came for ``shutdown_after_seconds`` and none is in flight
starting                    unchanged while requested instances are not ready yet (no pile-up)
hot                         max(short, long) ≥ ``scaling_threshold``: up to the count that brings the load
                            under the threshold, at least one more, at most ``max_instances``
cold                        down only when the count after removal keeps the load under
                            ``scaling_threshold × down_ratio`` in both windows (hysteresis), no sooner than
                            ``scale_down_delay`` after the last change, never below one, at most halving
steady                      unchanged
==========================  ================================================================================

The gap between the up threshold and ``threshold × down_ratio`` after removal is what keeps a steady load
from flapping: a count reached by scaling up never satisfies the scale-down test at the same load.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """A chute's own scaling settings (from its manifest)."""

    concurrency: int
    max_instances: int
    scaling_threshold: float
    shutdown_after_seconds: float

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ScalingPolicy:
        return cls(
            concurrency=max(1, int(manifest.get("concurrency", 1))),
            max_instances=max(1, int(manifest.get("max_instances", 1))),
            scaling_threshold=float(manifest.get("scaling_threshold", 0.75)),
            shutdown_after_seconds=float(manifest.get("shutdown_after_seconds", 300)),
        )


@dataclass(frozen=True, slots=True)
class AutoscaleParams:
    """The platform's autoscaler settings (the same for every chute)."""

    interval: float = 10.0  # seconds between evaluations; also the short window
    long_window: float = 300.0
    down_ratio: float = 0.8
    scale_down_delay: float = 120.0
    report_max_age: float = 15.0  # a gateway's utilisation report counts this long after it arrived


@dataclass(frozen=True, slots=True)
class LoadSample:
    """One observation of a chute: calls in flight (or held) over all gateways, and how many instances were ready."""

    at: float
    in_flight: float
    ready: int


@dataclass(frozen=True, slots=True)
class ChuteLoad:
    """What the autoscaler knows about one chute at the time of a decision."""

    desired: int
    ready: int
    samples: Sequence[LoadSample]  # oldest first
    last_request_at: float | None = None  # when the latest call ended, as the gateways reported it
    active_since: float | None = None  # when the chute last went from zero to running (deploy, wake, scale)
    last_change_at: float | None = None  # when the desired count last changed
    held: int = 0  # calls the gateways hold now, waiting for a first instance


@dataclass(frozen=True, slots=True)
class Decision:
    target: int
    reason: str
    utilisation_short: float | None = None
    utilisation_long: float | None = None


def mean_in_flight(samples: Sequence[LoadSample], since: float) -> float | None:
    """Mean calls in flight over the samples taken after ``since``; None if there are none."""
    window = [s.in_flight for s in samples if s.at > since]
    return sum(window) / len(window) if window else None


def instances_for(demand: float, concurrency: int, utilisation: float) -> int:
    """The fewest instances that carry ``demand`` calls in flight below ``utilisation``."""
    if utilisation <= 0:
        return sys.maxsize  # a zero threshold: any load is too much, run as many as allowed
    return math.floor(demand / (utilisation * concurrency)) + 1


def decide(policy: ScalingPolicy, load: ChuteLoad, now: float, params: AutoscaleParams) -> Decision:
    """The desired instance count of one chute, with the reason for it."""
    desired = load.desired
    if desired > policy.max_instances:
        return Decision(policy.max_instances, f"above max_instances ({policy.max_instances})")
    if desired <= 0:
        if load.held > 0:
            return Decision(1, f"{load.held} call(s) held by the gateways")
        return Decision(0, "scaled to zero: a call wakes it")

    short = mean_in_flight(load.samples, now - params.interval)
    long = mean_in_flight(load.samples, now - params.long_window)
    capacity = load.ready * policy.concurrency
    u_short = None if short is None or not capacity else short / capacity
    u_long = None if long is None or not capacity else long / capacity
    latest_in_flight = load.samples[-1].in_flight if load.samples else 0.0

    activity = [t for t in (load.last_request_at, load.active_since) if t is not None]
    if activity and latest_in_flight <= 0 and load.held <= 0:
        idle_for = now - max(activity)
        if idle_for >= policy.shutdown_after_seconds:
            return Decision(0, f"no calls for {idle_for:.0f}s (shutdown_after_seconds)", u_short, u_long)

    if load.ready < desired:
        return Decision(desired, f"waiting for {desired - load.ready} of {desired} instances to be ready",
                        u_short, u_long)  # fmt: skip
    if short is None or long is None or u_short is None or u_long is None:
        return Decision(desired, "no load observed yet", u_short, u_long)

    threshold = policy.scaling_threshold
    peak = max(u_short, u_long)
    demand = max(short, long)
    if peak >= threshold:
        if desired >= policy.max_instances:
            return Decision(desired, f"utilisation {peak:.2f} ≥ {threshold:.2f} but at max_instances", u_short, u_long)
        needed = instances_for(demand, policy.concurrency, threshold)
        target = min(policy.max_instances, max(desired + 1, needed))
        return Decision(target, f"utilisation {peak:.2f} ≥ threshold {threshold:.2f}", u_short, u_long)

    if desired > 1:
        since_change = math.inf if load.last_change_at is None else now - load.last_change_at
        enough = instances_for(demand, policy.concurrency, threshold * params.down_ratio)
        target = max(1, enough, math.ceil(desired / 2))
        if target < desired:
            if since_change < params.scale_down_delay:
                return Decision(desired, f"cooling down {params.scale_down_delay - since_change:.0f}s more before "
                                "scaling down", u_short, u_long)  # fmt: skip
            return Decision(target, f"utilisation {peak:.2f} below {threshold * params.down_ratio:.2f} with "
                            f"{target} instances", u_short, u_long)  # fmt: skip
    return Decision(desired, "steady", u_short, u_long)
