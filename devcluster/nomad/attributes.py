"""Typed device attributes with units, as Nomad's ``plugins/shared/structs`` parses and compares them.

``"40 GiB"`` parses to (40, GiB) and compares with a ``memory`` attribute of (81559, MiB) after converting both
to bytes. An attribute with a unit is not comparable with a unitless literal (Nomad's ``Attribute.Comparable``),
so ``memory >= "40000"`` fails, as it does in Nomad.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# unit -> (base, multiplier)
_UNITS: dict[str, tuple[str, float]] = {}
for _base, _table in (
    ("byte", {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4, "PiB": 1024**5, "EiB": 1024**6,
              "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4, "PB": 1000**5, "EB": 1000**6}),
    ("byte/s", {"B/s": 1, "KiB/s": 1024, "MiB/s": 1024**2, "GiB/s": 1024**3, "TiB/s": 1024**4,
                "kB/s": 1000, "KB/s": 1000, "MB/s": 1000**2, "GB/s": 1000**3, "TB/s": 1000**4}),
    ("hertz", {"Hz": 1, "MHz": 1000**2, "GHz": 1000**3}),
    ("watt", {"mW": 0.001, "W": 1, "kW": 1000, "MW": 1000**2, "GW": 1000**3}),
):  # fmt: skip
    for _unit, _mult in _table.items():
        _UNITS[_unit] = (_base, float(_mult))

_NUMBER_UNIT = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*([A-Za-z/]+)?\s*$")


@dataclass(frozen=True, slots=True)
class Attribute:
    """One of Int, Float, String or Bool, with an optional unit."""

    value: int | float | str | bool
    unit: str = ""

    @property
    def is_numeric(self) -> bool:
        return isinstance(self.value, int | float) and not isinstance(self.value, bool)

    def base_value(self) -> float:
        assert self.is_numeric
        mult = _UNITS[self.unit][1] if self.unit else 1.0
        return float(self.value) * mult

    def comparable(self, other: Attribute) -> bool:
        if self.is_numeric and other.is_numeric:
            if bool(self.unit) != bool(other.unit):
                return False
            return not self.unit or _UNITS[self.unit][0] == _UNITS[other.unit][0]
        return type(self.value) is type(other.value) and not self.is_numeric

    def compare(self, other: Attribute) -> int | None:
        """-1, 0 or 1; None when the two are not comparable."""
        if not self.comparable(other):
            return None
        if self.is_numeric:
            x, y = self.base_value(), other.base_value()
            return (x > y) - (x < y)
        s, t = str(self.value), str(other.value)
        return (s > t) - (s < t)

    def text(self) -> str:
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        return f"{self.value}{' ' + self.unit if self.unit else ''}" if self.unit else str(self.value)

    def to_json(self) -> dict[str, Any]:
        key = (
            "Bool"
            if isinstance(self.value, bool)
            else "Int"
            if isinstance(self.value, int)
            else ("Float" if isinstance(self.value, float) else "String")
        )
        out: dict[str, Any] = {key: self.value}
        if self.unit:
            out["Unit"] = self.unit
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attribute:
        for key in ("Int", "Float", "String", "Bool"):
            if data.get(key) is not None:
                return cls(data[key], data.get("Unit") or "")
        return cls("")


def parse_attribute(text: str) -> Attribute:
    """Nomad's ``ParseAttribute``: bool, then number with an optional known unit, else string."""
    raw = text.strip()
    if raw in ("true", "false"):
        return Attribute(raw == "true")
    m = _NUMBER_UNIT.match(raw)
    if m and (m.group(2) is None or m.group(2) in _UNITS):
        number = m.group(1)
        value: int | float = float(number) if "." in number else int(number)
        return Attribute(value, m.group(2) or "")
    return Attribute(raw)
