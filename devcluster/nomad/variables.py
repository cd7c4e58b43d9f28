"""Nomad Variables (1.4+): per-namespace paths holding string items, with check-and-set and blocking reads.

The rules are Nomad's (``nomad/structs/variables.go``, ``nomad/variables_endpoint.go``): paths match
``^[a-zA-Z0-9-_~/]{1,128}$``, ``nomad`` is reserved except ``nomad/jobs...`` and ``nomad/job-templates/<name>``,
at most 64 KiB of keys and values, ``cas=0`` creates only, a CAS conflict answers the current variable, a write
with unchanged items keeps the ModifyIndex, deleting a missing variable succeeds. Every change bumps the index
topics ``vars`` and ``var:<namespace>/<path>`` and calls the ``on_change`` callbacks (templates watch them).
Variables live unencrypted in the devcluster's snapshot (Nomad encrypts them with its keyring).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chutes.devcluster.state.index import IndexStore

PATH_RE = re.compile(r"^[a-zA-Z0-9\-_~/]{1,128}$")
MAX_SIZE = 64 * 1024
DEFAULT_NAMESPACE = "default"
WILDCARD = "*"


class VariableError(ValueError):
    """A request Nomad answers with 400; the message is Nomad's own text."""


@dataclass
class Variable:
    namespace: str
    path: str
    items: dict[str, str]
    create_index: int = 0
    modify_index: int = 0
    create_time: int = 0  # UnixNano, as Nomad
    modify_time: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "Namespace": self.namespace,
            "Path": self.path,
            "CreateIndex": self.create_index,
            "CreateTime": self.create_time,
            "ModifyIndex": self.modify_index,
            "ModifyTime": self.modify_time,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.metadata(), "Items": dict(self.items)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Variable:
        return cls(
            namespace=str(data["Namespace"]),
            path=str(data["Path"]),
            items={str(k): str(v) for k, v in (data.get("Items") or {}).items()},
            create_index=int(data.get("CreateIndex") or 0),
            modify_index=int(data.get("ModifyIndex") or 0),
            create_time=int(data.get("CreateTime") or 0),
            modify_time=int(data.get("ModifyTime") or 0),
        )


class CASConflict(Exception):
    """A check-and-set that lost: ``current`` is what Nomad answers (a zero-valued variable when missing)."""

    def __init__(self, current: Variable) -> None:
        super().__init__(f"cas conflict on {current.path}")
        self.current = current


def validate_path(path: str) -> None:
    """Nomad's path rules, with its error texts."""
    if not PATH_RE.fullmatch(path):
        raise VariableError(f"invalid path {path!r}".replace("'", '"'))
    parts = path.split("/")
    if parts[0] != "nomad":
        return
    if len(parts) == 1:
        raise VariableError(
            '"nomad" is a reserved top-level directory path, but you may write variables to "nomad/jobs", '
            '"nomad/job-templates", "nomad/sentinel", or below'
        )
    if parts[1] == "jobs":
        return
    if parts[1] == "job-templates" and len(parts) == 3 and parts[2]:
        return
    raise VariableError(
        'only paths at "nomad/jobs" or "nomad/job-templates" and below are valid paths under the top-level '
        '"nomad" directory'
    )


def items_size(items: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in items.items())


def topic(namespace: str, path: str) -> str:
    return f"var:{namespace}/{path}"


@dataclass
class VariableStore:
    """The variables of every namespace, and who to tell when one changes."""

    index: IndexStore
    variables: dict[tuple[str, str], Variable] = field(default_factory=dict)
    on_change: list[Callable[[str, str], None]] = field(default_factory=list)
    on_persist: list[Callable[[], None]] = field(default_factory=list)

    def get(self, namespace: str, path: str) -> Variable | None:
        return self.variables.get((namespace, path))

    def matching(self, namespace: str, prefix: str = "") -> list[Variable]:
        """Sorted by namespace then path, as Nomad lists them; ``*`` is every namespace."""
        found = [
            v
            for (ns, path), v in self.variables.items()
            if (namespace == WILDCARD or ns == namespace) and path.startswith(prefix)
        ]
        return sorted(found, key=lambda v: (v.namespace, v.path))

    def put(self, namespace: str, path: str, items: dict[str, str], cas: int | None = None) -> Variable:
        """Create or update; CASConflict when ``cas`` does not match, VariableError when invalid."""
        if namespace == WILDCARD:
            raise VariableError('can not target wildcard ("*")namespace')
        validate_path(path)
        if not items:
            raise VariableError("variable missing required Items object")
        if items_size(items) > MAX_SIZE:
            raise VariableError("variables are limited to 64KiB in total size")
        current = self.get(namespace, path)
        self._check_cas(namespace, path, current, cas)
        if current is not None and current.items == items:
            return current  # an unchanged write does not bump the index (nothing watches it wake up)
        now = time.time_ns()
        idx = self.index.index + 1
        var = Variable(
            namespace=namespace,
            path=path,
            items=dict(items),
            create_index=current.create_index if current else idx,
            create_time=current.create_time if current else now,
            modify_index=idx,
            modify_time=now,
        )
        self.variables[(namespace, path)] = var
        self._changed(namespace, path)
        return var

    def delete(self, namespace: str, path: str, cas: int | None = None) -> int:
        """Delete (a missing variable is fine); the index after it. CASConflict when ``cas`` does not match."""
        if namespace == WILDCARD:
            raise VariableError('can not target wildcard ("*")namespace')
        current = self.get(namespace, path)
        self._check_cas(namespace, path, current, cas)
        if current is None:
            return self.index.index
        del self.variables[(namespace, path)]
        return self._changed(namespace, path)

    def _check_cas(self, namespace: str, path: str, current: Variable | None, cas: int | None) -> None:
        if cas is None:
            return
        if current is None:
            if cas != 0:
                raise CASConflict(Variable(namespace=namespace, path=path, items={}))
            return
        if current.modify_index != cas:
            raise CASConflict(current)

    def _changed(self, namespace: str, path: str) -> int:
        idx = self.index.bump("vars", topic(namespace, path))
        for persist in self.on_persist:
            persist()
        for callback in self.on_change:
            callback(namespace, path)
        return idx

    # -- snapshot ----------------------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        return [v.to_json() for v in self.variables.values()]

    def restore(self, data: list[dict[str, Any]]) -> None:
        for item in data:
            var = Variable.from_json(item)
            self.variables[(var.namespace, var.path)] = var
