"""The simulated GPU source: specs, files, reloading, and UUIDs shared with the devcluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chutes.agent.sources import SimSpec, SimulatedSource, SimulationError, parse_specs
from chutes.core.inventory import simulated_gpus


def test_specs_give_catalog_gpus_with_the_devclusters_uuids() -> None:
    reading = SimulatedSource("node-1", parse_specs(["h100_sxm:8"])).read()
    assert reading.found and reading.source == "simulated"
    assert [g.model for g in reading.gpus] == ["h100_sxm"] * 8
    assert {g.memory_total_mib for g in reading.gpus} == {81559}
    assert {g.name for g in reading.gpus} == {"NVIDIA H100 80GB HBM3"}
    assert [g.uuid for g in reading.gpus] == [g.uuid for g in simulated_gpus("node-1", "h100_sxm", 8)]
    assert reading.driver_version and reading.cuda_version
    # Another node gets other UUIDs; the same node always the same.
    other = SimulatedSource("node-2", parse_specs(["h100_sxm:8"])).read()
    assert not {g.uuid for g in other.gpus} & {g.uuid for g in reading.gpus}
    assert SimulatedSource("node-1", parse_specs(["h100_sxm:8"])).read().gpus == reading.gpus


def test_several_specs_make_one_node_numbered_on() -> None:
    reading = SimulatedSource("n", parse_specs(["a100_sxm:2", "l40s:1,4090"])).read()
    assert [(g.index, g.model) for g in reading.gpus] == [(0, "a100_sxm"), (1, "a100_sxm"), (2, "l40s"), (3, "4090")]
    assert len({g.uuid for g in reading.gpus}) == 4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("h100_sxmm:8", "unknown GPU id"),
        ("h100_sxm:eight", "whole number"),
        ("h100_sxm:0", "between 1 and"),
        ("mi300x:1", "not an NVIDIA GPU"),
    ],
)
def test_bad_specs_are_refused_with_a_hint(spec: str, message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        SimSpec.parse(spec)


def test_yaml_file_with_groups_overrides_and_an_unknown_gpu(tmp_path: Path) -> None:
    f = tmp_path / "node.yaml"
    f.write_text(
        "driver_version: '535.183.01'\n"
        "cuda_version: '12.2'\n"
        "gpus:\n"
        "  - {model: h100_sxm, count: 2}\n"
        "  - {model: a100_sxm, ecc_errors: 3}\n"
        "  - {name: 'Tesla T4', memory_total_mib: 15360}\n"
    )
    reading = SimulatedSource("n1", file=f).read()
    assert (reading.driver_version, reading.cuda_version) == ("535.183.01", "12.2")
    assert [(g.index, g.model, g.healthy) for g in reading.gpus] == [
        (0, "h100_sxm", True),
        (1, "h100_sxm", True),
        (2, "a100_sxm", False),
        (3, None, True),
    ]
    assert "ECC" in (reading.gpus[2].problem or "")
    assert reading.gpus[3].name == "Tesla T4"
    assert reading.gpus[0].uuid == simulated_gpus("n1", "h100_sxm", 1)[0].uuid


def test_probe_json_output_replays_as_a_file(tmp_path: Path) -> None:
    original = SimulatedSource("n1", parse_specs(["l40s:2"])).read()
    f = tmp_path / "node.json"
    f.write_text(json.dumps({"gpus": [g.model_dump() for g in original.gpus], "driver_version": "1.2.3"}))
    replay = SimulatedSource("other-node", file=f).read()
    assert replay.gpus == original.gpus  # UUIDs kept from the file


def test_file_changes_are_picked_up_and_a_broken_file_keeps_the_last_reading(tmp_path: Path) -> None:
    f = tmp_path / "node.yaml"
    f.write_text("gpus: [{model: h100_sxm, count: 2}]\n")
    source = SimulatedSource("n", file=f)
    assert all(g.healthy for g in source.read().gpus)

    f.write_text("gpus: [{model: h100_sxm, count: 2, ecc_errors: 1}]\n")
    os.utime(f, ns=(1, 10**18))  # make sure the change is seen even within the clock's resolution
    assert not any(g.healthy for g in source.read().gpus)

    f.write_text("gpus: [{model: nope}]\n")
    os.utime(f, ns=(1, 2 * 10**18))
    assert len(source.read().gpus) == 2  # last good reading
    assert source.last_error is not None and "unknown GPU id" in source.last_error


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpus: [{model: h100_sxm, count: 2, memory_total_mib: -1}]", "memory_total_mib"),
        ("gpus: [{count: 2}]", "either `model`"),
        ("gpus: [{name: X, memory_total_mib: 1, count: 2}]", "`count` goes with `model`"),
        ("just text", "expected a mapping with a `gpus` list"),
        ("gpus: [1]", "expected a mapping"),
        ("gpus: [{model: l4, count: 2}, {name: X, index: 1, memory_total_mib: 5}]", "indices repeat"),
        ("gpus: [", "not valid"),
    ],
)
def test_bad_files_fail_at_startup_with_the_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "node.yaml"
    f.write_text(text)
    with pytest.raises(SimulationError, match=message):
        SimulatedSource("n", file=f)


def test_missing_file_and_empty_simulation(tmp_path: Path) -> None:
    with pytest.raises(SimulationError, match="cannot read simulation file"):
        SimulatedSource("n", file=tmp_path / "missing.yaml")
    f = tmp_path / "empty.json"
    f.write_text('{"gpus": []}')
    reading = SimulatedSource("n", file=f).read()
    assert not reading.found and reading.error and "no NVIDIA GPU found" in reading.error
