"""The failure throttle and the JSON depth check (pure, with a fake clock)."""

from __future__ import annotations

import json

import pytest

from chutes.core.edge import strictjson
from chutes.core.edge.throttle import FailureThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_throttled_after_its_burst_and_recovers_at_the_rate() -> None:
    clock = Clock()
    throttle = FailureThrottle(burst=3, per_second=0.5, clock=clock)
    assert not throttle  # nobody failed: the hot path checks an empty dict and nothing else
    for _ in range(3):
        assert throttle.gate("1.2.3.4", None) is None
        throttle.failed("1.2.3.4")
    assert throttle.gate("1.2.3.4", None) == 2  # one token at 0.5/s
    assert throttle.gate("5.6.7.8", None) is None  # other addresses are not affected
    clock.now += 2.0
    assert throttle.gate("1.2.3.4", None) is None
    throttle.failed("1.2.3.4")
    assert throttle.gate("1.2.3.4", None) == 2
    clock.now += 10.0  # refilled: the address is forgotten
    assert throttle.gate("1.2.3.4", None) is None and len(throttle) == 0


def test_a_key_that_authenticated_passes_a_throttled_address() -> None:
    throttle = FailureThrottle(burst=1, per_second=0.1, clock=Clock())
    throttle.accepted("cnk_good")
    throttle.failed("10.0.0.1")
    assert throttle.gate("10.0.0.1", "cnk_wrong") is not None
    assert throttle.gate("10.0.0.1", None) is not None
    assert throttle.gate("10.0.0.1", "cnk_good") is None
    throttle.rejected("cnk_good")  # revoked since
    assert throttle.gate("10.0.0.1", "cnk_good") is not None


def test_concurrent_lookups_from_a_suspect_address_cannot_share_its_last_token() -> None:
    clock = Clock()
    throttle = FailureThrottle(burst=2, per_second=0.1, clock=clock)
    throttle.failed("10.0.0.1")  # one token left
    assert throttle.gate("10.0.0.1", "cnk_a") is None  # takes the last token before its lookup ...
    assert throttle.gate("10.0.0.1", "cnk_b") is not None  # ... so a concurrent one waits
    throttle.failed("10.0.0.1")  # cnk_a was wrong: its token was already paid
    assert throttle.gate("10.0.0.1", "cnk_c") is not None
    clock.now += 10.0  # one token back
    assert throttle.gate("10.0.0.1", "cnk_valid") is None
    throttle.accepted("cnk_valid", "10.0.0.1")  # valid: the token goes back
    assert throttle.gate("10.0.0.1", "cnk_d") is None


def test_the_throttle_stays_bounded() -> None:
    clock = Clock()
    throttle = FailureThrottle(burst=5, per_second=1, max_clients=100, clock=clock)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) <= 100


@pytest.mark.parametrize(
    ("text", "depth"),
    [("{}", 1), ("[]", 1), ('"x"', 0), ("1", 0), ('{"a": [1, {"b": "[[[["}]}', 3), ('["\\"]]]", [[]]]', 3)],
)
def test_depth_ignores_brackets_in_strings(text: str, depth: int) -> None:
    assert strictjson.depth(text) == depth
    assert strictjson.depth(text.encode()) == depth


def test_deep_json_is_refused_before_parsing_and_shallow_json_parses() -> None:
    deep = "[" * 100_000 + "]" * 100_000  # json.loads would raise RecursionError
    with pytest.raises(strictjson.JSONTooDeep, match="deeper than 64"):
        strictjson.loads(deep)
    nested = json.dumps({"a": [[[[{"b": 1}]]]]})
    assert strictjson.loads(nested, max_depth=6) == json.loads(nested)
    with pytest.raises(strictjson.JSONTooDeep):
        strictjson.loads(nested, max_depth=5)
    wide = json.dumps([{"x": [i]} for i in range(10_000)])  # many brackets, shallow
    assert len(strictjson.loads(wide)) == 10_000
