"""The state on disk: acknowledged writes survive a SIGKILL through the journal, which compaction keeps small."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chutes.devcluster.state.snapshot import Snapshotter
from tests.support.devcluster import DevclusterHandle


class Table:
    """A keyed table with the collect / delta / replay trio the devcluster gives its Snapshotter."""

    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}
        self.unsaved: set[str] = set()

    def put(self, key: str, value: Any) -> None:
        self.rows[key] = value
        self.unsaved.add(key)

    def collect(self) -> dict[str, Any]:
        self.unsaved.clear()
        return {"rows": dict(self.rows)}

    def delta(self) -> dict[str, Any] | None:
        out = {k: self.rows.get(k) for k in self.unsaved}
        self.unsaved.clear()
        return {"rows": out} if out else None

    @staticmethod
    def replay(saved: dict[str, Any], record: dict[str, Any]) -> None:
        rows = saved.setdefault("rows", {})
        for key, value in record["rows"].items():
            if value is None:
                rows.pop(key, None)
            else:
                rows[key] = value


def snapshotter(path: Path, table: Table, compact_min_bytes: int = 1 << 20) -> Snapshotter:
    return Snapshotter(path, table.collect, table.delta, table.replay, compact_min_bytes=compact_min_bytes)


def test_a_flush_appends_only_what_changed_and_a_load_replays_it(tmp_path: Path) -> None:
    table = Table()
    snap = snapshotter(tmp_path / "state.json", table)
    table.put("a", 1)
    snap.write()
    for i in range(50):
        table.put(f"k{i}", i)
        snap.mark()
        snap.flush()
    lines = snap.journal_path.read_text().splitlines()
    assert len(lines) == 50 and all(len(json.loads(line)["rows"]) == 1 for line in lines), "one record per write"
    assert json.loads(snap.path.read_text())["rows"] == {"a": 1}, "the snapshot is not rewritten per write"
    loaded = snapshotter(tmp_path / "state.json", Table()).load()
    assert loaded is not None and loaded["rows"] == {"a": 1, **{f"k{i}": i for i in range(50)}}


def test_the_journal_is_compacted_once_larger_than_the_snapshot(tmp_path: Path) -> None:
    table = Table()
    snap = snapshotter(tmp_path / "state.json", table, compact_min_bytes=0)
    table.put("seed", "x" * 200)
    snap.write()
    compactions = 0
    for i in range(100):
        table.put(f"k{i}", i)
        snap.mark()
        snap.flush()
        journal = snap.journal_path.stat().st_size if snap.journal_path.exists() else 0
        compactions += journal == 0
        assert journal <= snap.path.stat().st_size + 100, "never much more than the snapshot: O(1) amortised"
    assert compactions >= 2
    loaded = snapshotter(tmp_path / "state.json", Table()).load()
    assert loaded is not None and loaded["rows"] == table.rows


def test_a_torn_last_record_is_dropped_and_an_older_generation_is_not_replayed(tmp_path: Path) -> None:
    table = Table()
    snap = snapshotter(tmp_path / "state.json", table)
    snap.write()
    table.put("kept", 1)
    snap.mark()
    snap.flush()
    old_journal = snap.journal_path.read_bytes()
    with snap.journal_path.open("ab") as handle:
        handle.write(b'{"rows":{"torn"')  # killed mid-append: that write was never acknowledged
    loaded = snapshotter(tmp_path / "state.json", Table()).load()
    assert loaded == {"rows": {"kept": 1}, "journal_generation": 1}
    # A kill between writing a newer snapshot and removing the journal: the stale records must not win.
    table.put("kept", 2)
    snap.write()
    snap.journal_path.write_bytes(old_journal)
    loaded = snapshotter(tmp_path / "state.json", Table()).load()
    assert loaded is not None and loaded["rows"] == {"kept": 2}


def test_acknowledged_registrations_and_kv_writes_survive_a_sigkill(fresh_dc: DevclusterHandle) -> None:
    c = fresh_dc.consul()
    for i in range(30):
        assert c.kv.put(f"journal/k{i}", f"v{i}")
        c.agent.service.register("chutes-agent", service_id=f"chutes-agent-j{i}", check={"TTL": "1h"})
    c.agent.service.deregister("chutes-agent-j0")
    assert c.kv.delete("journal/k1")
    _, before = c.kv.get("journal/k2")
    assert (fresh_dc.data_dir / "state.json.journal").exists(), "writes go to the journal, not a new snapshot"
    fresh_dc.kill()
    fresh_dc.start()
    c = fresh_dc.consul()
    _, entries = c.kv.get("journal/", recurse=True)
    assert {e["Key"] for e in entries} == {f"journal/k{i}" for i in range(30)} - {"journal/k1"}
    _, after = c.kv.get("journal/k2")
    assert after is not None and before is not None and after["ModifyIndex"] == before["ModifyIndex"]
    services = c.agent.services()
    assert {s for s in services if s.startswith("chutes-agent-j")} == {f"chutes-agent-j{i}" for i in range(1, 30)}
    assert len(c.agent.checks()) >= 29
