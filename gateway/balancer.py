"""Choosing an instance for a call: least in-flight with power-of-two choices (pure).

Each gateway counts the calls it has in flight on each instance. A call goes to the less loaded of two
instances drawn at random among those below the chute's concurrency (Mitzenmacher's "power of two choices":
near-optimal balance without scanning every instance or herding every gateway onto the same least-loaded one).
Instances that just refused a connection are skipped for a short cool-down, and the instances already tried
by this call are avoided, so a retry lands elsewhere.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Container, Sequence
from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Upstream:
    """One instance as the gateway sees it; ``in_flight`` and ``cooldown_until`` are this gateway's own view."""

    key: str
    host: str
    port: int
    in_flight: int = 0
    cooldown_until: float = 0.0
    #: ``host:port`` as a Host header writes it
    authority: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = f"{host}:{self.port}"


_RNG = random.Random()


class NoUpstream(enum.Enum):
    """Why no instance could be chosen: decides the answer (429 when busy, 503 otherwise)."""

    NONE = "no instance is running"
    BUSY = "every instance is at its concurrency limit"
    UNREACHABLE = "no instance is reachable"


def choose(
    upstreams: Sequence[Upstream],
    concurrency: int,
    now: float,
    avoid: Container[str] = (),
    rng: random.Random | None = None,
) -> Upstream | NoUpstream:
    """The instance for the next attempt of a call, or why there is none.

    Eligible: not in ``avoid``, not cooling down, fewer than ``concurrency`` calls in flight. Among the
    eligible, two are drawn at random and the one with fewer calls in flight wins (ties: the first drawn).
    """
    if len(upstreams) == 1 and not avoid:  # one instance, the usual case of a small chute: no list to build
        only = upstreams[0]
        if only.cooldown_until > now:
            return NoUpstream.UNREACHABLE
        return only if only.in_flight < concurrency else NoUpstream.BUSY
    eligible: list[Upstream] = []
    busy = False
    for up in upstreams:
        if up.key in avoid or up.cooldown_until > now:
            continue
        if up.in_flight >= concurrency:
            busy = True
            continue
        eligible.append(up)
    if not eligible:
        if busy:
            return NoUpstream.BUSY
        return NoUpstream.UNREACHABLE if upstreams else NoUpstream.NONE
    count = len(eligible)
    if count == 1:
        return eligible[0]
    draw = (rng or _RNG).random
    i = int(draw() * count)
    j = int(draw() * (count - 1))  # a second, different index (cheaper than sample())
    first, second = eligible[i], eligible[j + 1 if j >= i else j]
    return second if second.in_flight < first.in_flight else first
