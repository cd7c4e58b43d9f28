"""Constraint targets and operators, following Nomad's ``scheduler/feasible`` checkers.

Node constraints compare strings (``${meta.*}``, ``${attr.*}``, ``${node.*}``); device constraints compare
typed attributes with units (``${device.attr.memory} >= "40 GiB"``).
"""

from __future__ import annotations

import re

from chutes.devcluster.nomad.attributes import Attribute, parse_attribute
from chutes.devcluster.nomad.nodes import DeviceGroup, Node

DISTINCT_HOSTS = "distinct_hosts"
DISTINCT_PROPERTY = "distinct_property"
OPERATORS = frozenset(
    {"=", "==", "is", "!=", "not", "<", "<=", ">", ">=", "regexp", "set_contains", "set_contains_all",
     "set_contains_any", "is_set", "is_not_set", "version", "semver", DISTINCT_HOSTS, DISTINCT_PROPERTY}
)  # fmt: skip
_INTERP = re.compile(r"^\$\{(.+)\}$")


def resolve_node_target(target: str | None, node: Node) -> tuple[str | None, bool]:
    """The value of ``target`` on ``node`` and whether it was found (a literal is always found)."""
    if target is None:
        return None, False
    m = _INTERP.match(target)
    if m is None:
        return target, True
    name = m.group(1)
    fixed = {
        "node.unique.id": node.id,
        "node.unique.name": node.name,
        "node.datacenter": node.datacenter,
        "node.class": node.node_class,
        "node.pool": node.node_pool,
        "node.region": "global",
    }
    if name in fixed:
        return fixed[name], True
    if name.startswith("attr."):
        value = node.attributes.get(name[5:])
        return value, value is not None
    if name.startswith("meta."):
        value = node.all_meta().get(name[5:])
        return value, value is not None
    return None, False


def _split_set(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _version_key(text: str) -> tuple[tuple[int, ...], int, str]:
    raw = text.strip().lstrip("vV")
    core, _, pre = raw.partition("-")
    core = core.split("+", 1)[0]
    parts = []
    for piece in core.split("."):
        if not piece.isdigit():
            raise ValueError(f"malformed version {text!r}")
        parts.append(int(piece))
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts), 0 if pre else 1, pre


def _cmp_versions(a: str, b: str) -> int:
    ka, kb = _version_key(a), _version_key(b)
    return (ka > kb) - (ka < kb)


def check_version(value: str, constraint: str) -> bool:
    """go-version constraints: comma-separated clauses of ``=``, ``!=``, ``>``, ``<``, ``>=``, ``<=``, ``~>``."""
    try:
        for clause in constraint.split(","):
            m = re.match(r"^\s*(~>|>=|<=|!=|=|>|<)?\s*(\S+)\s*$", clause)
            if m is None:
                return False
            op, want = m.group(1) or "=", m.group(2)
            c = _cmp_versions(value, want)
            if op == "~>":
                base = _version_key(want)[0]
                segments = len(want.lstrip("vV").split("-")[0].split("."))
                prefix_len = max(1, segments - 1)
                if c < 0 or _version_key(value)[0][:prefix_len] != base[:prefix_len]:
                    return False
            elif not {"=": c == 0, "!=": c != 0, ">": c > 0, "<": c < 0, ">=": c >= 0, "<=": c <= 0}[op]:
                return False
        return True
    except ValueError:
        return False


def _order(op: str, left: str, right: str) -> bool:
    try:
        lf, rf = float(left), float(right)
        c = (lf > rf) - (lf < rf)
    except ValueError:
        c = (left > right) - (left < right)
    return {"<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0}[op]


def check_constraint(operand: str, lval: str | None, rval: str | None, lfound: bool, rfound: bool) -> bool:
    """Nomad's ``checkConstraint`` over string values."""
    if operand in (DISTINCT_HOSTS, DISTINCT_PROPERTY):
        return True
    both = lfound and rfound and lval is not None and rval is not None
    if operand in ("=", "==", "is"):
        return both and lval == rval
    if operand in ("!=", "not"):
        return not (lfound and rfound and lval == rval)
    if operand in ("<", "<=", ">", ">="):
        return both and _order(operand, lval or "", rval or "")
    if operand == "is_set":
        return lfound
    if operand == "is_not_set":
        return not lfound
    if operand in ("version", "semver"):
        return both and check_version(lval or "", rval or "")
    if operand == "regexp":
        try:
            return both and re.search(rval or "", lval or "") is not None
        except re.error:
            return False
    if operand in ("set_contains", "set_contains_all"):
        return both and set(_split_set(rval or "")) <= set(_split_set(lval or ""))
    if operand == "set_contains_any":
        return both and bool(set(_split_set(rval or "")) & set(_split_set(lval or "")))
    return False


def node_matches(operand: str, ltarget: str | None, rtarget: str | None, node: Node) -> bool:
    lval, lfound = resolve_node_target(ltarget, node)
    rval, rfound = resolve_node_target(rtarget, node)
    return check_constraint(operand, lval, rval, lfound, rfound)


def resolve_device_target(target: str | None, group: DeviceGroup) -> Attribute | None:
    if target is None:
        return None
    m = _INTERP.match(target)
    if m is None:
        return parse_attribute(target)
    name = m.group(1)
    if name == "device.model":
        return Attribute(group.name)
    if name == "device.vendor":
        return Attribute(group.vendor)
    if name == "device.type":
        return Attribute(group.type)
    if name == "device.ids":
        return Attribute(",".join(i.id for i in group.instances))
    if name.startswith("device.attr."):
        return group.attributes.get(name[len("device.attr.") :])
    return None


def check_device_constraint(operand: str, lval: Attribute | None, rval: Attribute | None) -> bool:
    """Nomad's ``checkAttributeConstraint``: typed comparison with units."""
    if operand in (DISTINCT_HOSTS, DISTINCT_PROPERTY):
        return True
    lfound, rfound = lval is not None, rval is not None
    if operand in ("!=", "not"):
        if not (lfound and rfound):
            return True
        c = lval.compare(rval)  # type: ignore[union-attr,arg-type]
        return c is None or c != 0
    if operand in ("<", "<=", ">", ">=", "=", "==", "is"):
        if lval is None or rval is None:
            return False
        c = lval.compare(rval)
        if c is None:
            return False
        return {"<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0}.get(operand, c == 0)
    if operand == "is_set":
        return lfound
    if operand == "is_not_set":
        return not lfound
    if lval is None or rval is None:
        return False
    return check_constraint(operand, lval.text(), rval.text(), True, True)


def device_matches(operand: str, ltarget: str | None, rtarget: str | None, group: DeviceGroup) -> bool:
    return check_device_constraint(
        operand, resolve_device_target(ltarget, group), resolve_device_target(rtarget, group)
    )
