"""Pure placement: units, operators, feasibility → rank → select, and the counted reasons (no sockets)."""

from __future__ import annotations

import pytest

from chutes.core.inventory import simulated_gpus
from chutes.devcluster.durations import DurationError, format_duration, parse_duration
from chutes.devcluster.filter import FilterError, compile_filter
from chutes.devcluster.nomad import models
from chutes.devcluster.nomad.attributes import Attribute, parse_attribute
from chutes.devcluster.nomad.constraints import check_constraint, check_version, device_matches, node_matches
from chutes.devcluster.nomad.nodes import simulated_node
from chutes.devcluster.nomad.placement import NodeUsage, place


@pytest.mark.parametrize(
    ("op", "rhs", "expected"),
    [(">=", "40 GiB", True), (">=", "80 GiB", False), ("<", "81560 MiB", True), (">", "86 GB", False),
     (">", "85 GB", True), ("=", "81559 MiB", True), ("!=", "81559 MiB", False), (">=", "40000", False),
     (">=", "40 W", False), ("is_set", "", True)],
)  # fmt: skip
def test_device_memory_compares_with_units(op: str, rhs: str, expected: bool) -> None:
    [group] = simulated_node("n", "h100_sxm", 1).devices
    assert device_matches(op, "${device.attr.memory}", rhs, group) is expected


def test_attribute_parsing() -> None:
    assert parse_attribute("40 GiB") == Attribute(40, "GiB")
    assert parse_attribute("1.5GHz") == Attribute(1.5, "GHz")
    assert parse_attribute("true") == Attribute(True)
    assert parse_attribute("NVIDIA H100") == Attribute("NVIDIA H100")
    assert parse_attribute("40 parsecs") == Attribute("40 parsecs")
    assert Attribute(1, "GiB").compare(Attribute(1024, "MiB")) == 0
    assert Attribute(1, "GB").compare(Attribute(1, "GiB")) == -1


def test_node_operators() -> None:
    assert check_constraint("set_contains_any", "a10,h100", "l4, h100", True, True)
    assert not check_constraint("set_contains", "a10,h100", "h100,l4", True, True)
    assert check_constraint("set_contains", "a10, h100, l4", "h100,l4", True, True)
    assert check_constraint("regexp", "NVIDIA H100 80GB HBM3", "H100|A100", True, True)
    assert check_constraint("<", "9", "10", True, True), "numbers compare numerically"
    assert check_constraint("<", "b", "c", True, True)
    assert check_constraint("!=", None, "x", False, True), "a missing attribute is != anything"
    assert not check_constraint("=", None, "x", False, True)
    assert check_constraint("is_not_set", None, None, False, False)
    assert check_version("1.9.7", ">= 1.5, < 2.0")
    assert not check_version("1.4.0", ">= 1.5")
    assert check_version("1.2.3", "~> 1.2")
    assert not check_version("2.0.0", "~> 1.2")


def test_node_targets() -> None:
    node = simulated_node("gpu-a", "h100_sxm", 2)
    node.dynamic_meta["chutes_gpu_model"] = "h100_sxm"
    assert node_matches("=", "${node.unique.name}", "gpu-a", node)
    assert node_matches("=", "${node.unique.id}", node.id, node)
    assert node_matches("=", "${node.datacenter}", "dc1", node)
    assert node_matches("set_contains_any", "${meta.chutes_gpu_model}", "a100,h100_sxm", node)
    assert node_matches("=", "${attr.driver.raw_exec}", "1", node)
    assert not node_matches("is_set", "${meta.nope}", "", node)


def _group(count: int, *, constraints: list[dict] | None = None, ids: str | None = None) -> models.TaskGroup:
    device: dict = {"Name": "nvidia/gpu", "Count": count, "Constraints": constraints or []}
    if ids:
        device["Constraints"].append({"LTarget": "${device.ids}", "Operand": "set_contains_any", "RTarget": ids})
    return models.TaskGroup.model_validate(
        {"Name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec", "Resources": {"Devices": [device]}}]}
    )


JOB = models.Job(ID="j", Datacenters=["dc1"])


def test_gpu_bin_packing_prefers_the_fuller_node() -> None:
    big, small = simulated_node("big", "h100_sxm", 8), simulated_node("small", "h100_sxm", 2)
    placement, _ = place(JOB, _group(1), [big, small], {})
    assert placement is not None and placement.node.name == "small"
    # With one GPU of "small" already taken, "small" is fuller still and takes the second request.
    usage = {small.id: NodeUsage(device_ids={small.devices[0].instances[0].id})}
    placement, _ = place(JOB, _group(1), [big, small], usage)
    assert placement is not None and placement.node.name == "small"
    [assignment] = placement.devices["t"]
    assert assignment.ids == [small.devices[0].instances[1].id]


def test_failure_reasons_are_counted_per_node() -> None:
    nodes = [simulated_node("a10-1", "a10", 2), simulated_node("h100-1", "h100_sxm", 2), simulated_node("cpu", "", 0)]
    memory = [{"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": "40 GiB"}]
    placement, metric = place(JOB, _group(4, constraints=memory), nodes, {})
    assert placement is None
    assert metric.nodes_evaluated == 3 and metric.constraint_filtered == {"missing devices": 3}
    used = {nodes[1].id: NodeUsage(device_ids={i.id for i in nodes[1].devices[0].instances})}
    placement, metric = place(JOB, _group(1, constraints=memory), nodes, used)
    assert placement is None
    assert metric.constraint_filtered == {"missing devices": 2}
    assert metric.dimension_exhausted == {"devices: no devices match request": 1} and metric.nodes_exhausted == 1
    assert "0 of 3 nodes fit" in metric.explain()


def test_device_ids_constraint_pins_instances() -> None:
    node = simulated_node("pin", "h100_sxm", 4)
    wanted = simulated_gpus("pin", "h100_sxm", 4)[2].uuid
    placement, _ = place(JOB, _group(1, ids=wanted), [node], {})
    assert placement is not None and placement.devices["t"][0].ids == [wanted]


def test_device_affinity_picks_the_preferred_model_on_a_mixed_node() -> None:
    node = simulated_node("mixed", "a10", 2)
    node.devices += simulated_node("mixed", "h100_sxm", 2).devices
    group = models.TaskGroup.model_validate(
        {
            "Name": "g",
            "Tasks": [
                {
                    "Name": "t",
                    "Driver": "raw_exec",
                    "Resources": {
                        "Devices": [
                            {
                                "Name": "nvidia/gpu",
                                "Count": 1,
                                "Affinities": [
                                    {
                                        "LTarget": "${device.model}",
                                        "Operand": "=",
                                        "RTarget": "NVIDIA H100 80GB HBM3",
                                        "Weight": 100,
                                    }
                                ],
                            }
                        ]
                    },
                }
            ],
        }
    )
    placement, _ = place(JOB, group, [node], {})  # fmt: skip
    assert placement is not None and placement.devices["t"][0].name == "NVIDIA H100 80GB HBM3"


def test_durations() -> None:
    assert parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5 and parse_duration("15") == 15
    assert format_duration(15) == "15s" and format_duration(90) == "1m30s"
    with pytest.raises(DurationError):
        parse_duration("ten seconds")


def test_filter_expressions() -> None:
    node = {"Name": "gpu-a", "Meta": {"chutes_gpu_model": "h100"}, "Tags": ["chutes", "x"], "Status": "ready"}
    assert compile_filter('Meta.chutes_gpu_model == "h100"')(node)
    assert compile_filter('"chutes" in Tags and Status == ready')(node)
    assert compile_filter('Tags contains "x" or Name == "nope"')(node)
    assert not compile_filter('not (Name matches "^gpu-")')(node)
    assert compile_filter("Meta.missing is empty")(node)
    assert compile_filter('Meta["chutes_gpu_model"] != "a10"')(node)
    with pytest.raises(FilterError):
        compile_filter("Name ===")
