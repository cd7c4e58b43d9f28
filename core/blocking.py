"""Consul's and Nomad's rules for following a blocking query's index (pure).

A blocking query passes the index of the previous answer and returns when the data changes or the wait ends.
The rules, from Consul's documentation: an index that goes backwards (a restarted or replaced server) resets
the watch to 0; an answer with the same index is not a change; an index is always at least 1 (0 would make the
next query non-blocking).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def parse_index(raw: Any) -> int:
    """The index of an answer (``X-Consul-Index``/``X-Nomad-Index``, or py-consul's first value); 0 when absent
    or not a number."""
    try:
        return max(0, int(raw))
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class Step:
    """Where a watch stands after one answer."""

    index: int  # the index to pass with the next query (0: start over, non-blocking)
    changed: bool  # the data may have changed since the previous answer (never on the first answer)


def advance(previous: int, raw: Any) -> Step:
    """The next index after an answer with index ``raw`` to a query made at ``previous``."""
    new = parse_index(raw)
    if new < previous:
        return Step(0, True)
    index = max(new, 1)
    return Step(index, previous != 0 and index != previous)
