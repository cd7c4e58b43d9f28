"""JSON with a nesting limit: refused before it is parsed, so deep input is a 4xx and never a crash.

CPython's parser recurses once per nesting level: ``[[[[...]]]]`` deep enough raises RecursionError (a 500
where nothing catches it), and a structure just under the interpreter's limit breaks the first recursive
function that later walks it. ``check_depth`` measures the nesting of the raw text without parsing it: a
body with fewer brackets than the limit (almost every body) is accepted after two ``bytes.count`` calls;
otherwise strings are cut out with one regular expression and the brackets that remain are counted.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

DEFAULT_MAX_DEPTH = 64

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Opening brackets become 2, closing ones 0, so that ``byte - 1`` is the change in depth.
_BRACKETS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_OTHERS = bytes(b for b in range(256) if b not in b"[]{}")


class JSONTooDeep(ValueError):
    """The JSON text nests deeper than allowed."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"JSON nested deeper than {max_depth} levels")
        self.max_depth = max_depth


def depth(raw: bytes | str) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (brackets inside strings do not count)."""
    data = raw.encode() if isinstance(raw, str) else raw
    brackets = _STRING.sub(b"", data).translate(None, _OTHERS).translate(_BRACKETS)
    return max(itertools.accumulate(b - 1 for b in brackets), default=0)


def check_depth(raw: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise JSONTooDeep when ``raw`` nests deeper than ``max_depth``."""
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return
    if depth(data) > max_depth:
        raise JSONTooDeep(max_depth)


def loads(raw: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """``json.loads`` that refuses text nested deeper than ``max_depth`` (JSONTooDeep, a ValueError)."""
    check_depth(raw, max_depth)
    return json.loads(raw)
