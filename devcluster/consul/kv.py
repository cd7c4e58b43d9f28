"""Consul's key/value store with check-and-set, session locks and lock-delay.

Topics: ``kv`` for the whole table (prefix reads) and ``kv:<key>`` for one key (single-key reads, which
leader elections block on).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from chutes.devcluster.consul.records import KVEntry
from chutes.devcluster.state.index import IndexStore

MAX_VALUE_BYTES = 512 * 1024


class KVError(ValueError):
    """A KV request Consul would refuse (the API answers it as a 4xx)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class KVStore:
    def __init__(self, index: IndexStore, session_exists: Callable[[str], bool]) -> None:
        self.index = index
        self.entries: dict[str, KVEntry] = {}
        self._session_exists = session_exists
        self._lock_delay_until: dict[str, float] = {}
        # Keys written or deleted since the snapshot journal last took them (``take_changed``).
        self.unsaved: set[str] = set()
        self.on_change: list[Callable[[], None]] = []

    def get(self, key: str) -> KVEntry | None:
        return self.entries.get(key)

    def prefix(self, prefix: str) -> list[KVEntry]:
        return [self.entries[k] for k in sorted(self.entries) if k.startswith(prefix)]

    def keys(self, prefix: str, separator: str | None) -> list[str]:
        out: list[str] = []
        for key in sorted(self.entries):
            if not key.startswith(prefix):
                continue
            if separator:
                cut = key.find(separator, len(prefix))
                if cut >= 0:
                    key = key[: cut + len(separator)]
            if not out or out[-1] != key:
                out.append(key)
        return out

    def key_index(self, key: str) -> int:
        entry = self.entries.get(key)
        return max(entry.modify_index if entry else 0, self.index.of(f"kv:{key}"))

    def table_index(self) -> int:
        return self.index.of("kv")

    def put(
        self,
        key: str,
        value: bytes,
        flags: int | None = None,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        """Consul's PUT semantics; False when a CAS, acquire or release does not apply."""
        if len(value) > MAX_VALUE_BYTES:
            raise KVError(413, f"Value exceeds {MAX_VALUE_BYTES} byte limit")
        if not key:
            raise KVError(400, "Missing key name")
        entry = self.entries.get(key)
        if cas is not None:
            if cas == 0 and entry is not None:
                return False
            if cas > 0 and (entry is None or entry.modify_index != cas):
                return False
        # Consul validates the session of an acquire only (500 there); a release by an unknown session is just
        # not the holder's, so it answers false.
        if acquire is not None and not self._session_exists(acquire):
            raise KVError(500, f'invalid session "{acquire}"')
        if acquire is not None:
            if entry is not None and entry.session is not None and entry.session != acquire:
                return False
            if (entry is None or entry.session != acquire) and self._lock_delay_until.get(key, 0.0) > time.monotonic():
                return False
        if release is not None and (entry is None or entry.session != release):
            return False
        idx = self.index.bump("kv", f"kv:{key}")
        if entry is None:
            entry = KVEntry(key=key, value=value, create_index=idx)
            self.entries[key] = entry
        entry.value = value
        entry.modify_index = idx
        if flags is not None:
            entry.flags = flags
        if acquire is not None and entry.session != acquire:
            entry.session = acquire
            entry.lock_index += 1
        if release is not None:
            entry.session = None
        self.unsaved.add(key)
        self._changed()
        return True

    def delete(self, key: str, recurse: bool = False, cas: int | None = None) -> bool:
        if recurse:
            doomed = [k for k in self.entries if k.startswith(key)]
        else:
            entry = self.entries.get(key)
            if cas is not None and (entry is None or entry.modify_index != cas):
                return False
            doomed = [key] if entry is not None else []
        if not doomed and cas is None:
            self.index.bump("kv", f"kv:{key}")
            self._changed()
            return True
        topics = ["kv", *(f"kv:{k}" for k in doomed)]
        for k in doomed:
            del self.entries[k]
        self.unsaved.update(doomed)
        self.index.bump(*topics)
        self._changed()
        return True

    def release_session(self, session_id: str, behavior: str, lock_delay_s: float) -> None:
        """A session was invalidated: release (or delete) its locks and hold them back for the lock-delay."""
        held = [e for e in self.entries.values() if e.session == session_id]
        if not held:
            return
        until = time.monotonic() + lock_delay_s
        topics = ["kv"]
        for entry in held:
            topics.append(f"kv:{entry.key}")
            if lock_delay_s > 0:
                self._lock_delay_until[entry.key] = until
            if behavior == "delete":
                del self.entries[entry.key]
            else:
                entry.session = None
        idx = self.index.bump(*topics)
        for entry in held:
            entry.modify_index = idx
        self.unsaved.update(e.key for e in held)
        self._changed()

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    def to_json(self) -> dict[str, dict[str, Any]]:
        """Every entry by key, as the snapshot keeps them (resets ``unsaved``)."""
        self.unsaved.clear()
        return {e.key: _saved(e) for e in self.entries.values()}

    def take_changed(self) -> dict[str, dict[str, Any] | None]:
        """The entries written (or, as None, deleted) since the last snapshot or call."""
        out = {k: _saved(e) if (e := self.entries.get(k)) is not None else None for k in self.unsaved}
        self.unsaved.clear()
        return out

    def restore(self, saved: list[dict[str, Any]] | dict[str, dict[str, Any]]) -> None:
        """Load saved entries (a list in snapshots written before the journal, by key since)."""
        items = saved.values() if isinstance(saved, dict) else saved
        for item in items:
            self.entries[item["Key"]] = KVEntry(
                key=item["Key"],
                value=base64.b64decode(item["Value"]),
                flags=item["Flags"],
                create_index=item["CreateIndex"],
                modify_index=item["ModifyIndex"],
                lock_index=item["LockIndex"],
                session=item["Session"],
            )


def _saved(e: KVEntry) -> dict[str, Any]:
    return {
        "Key": e.key,
        "Value": base64.b64encode(e.value).decode(),
        "Flags": e.flags,
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
        "LockIndex": e.lock_index,
        "Session": e.session,
    }


def entry_json(entry: KVEntry) -> dict[str, Any]:

    data: dict[str, Any] = {
        "LockIndex": entry.lock_index,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": base64.b64encode(entry.value).decode() if entry.value else None,
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    }
    if entry.session:
        data["Session"] = entry.session
    return data
