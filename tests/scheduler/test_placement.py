"""Placement on small synthetic clusters: feasibility, ranking, explanations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chutes import gpus
from chutes.chute.node_selector import NodeSelector
from chutes.core.inventory import simulated_gpus
from chutes.scheduler.placement import (
    GPU,
    Cluster,
    NodeState,
    Placement,
    PlacementRequest,
    Reason,
    Unschedulable,
    mark_in_use,
    min_vram_mib,
    place,
    place_many,
)


def node(node_id: str, model: str, count: int, **kwargs: object) -> NodeState:
    """A node with ``count`` idle GPUs of ``model``, as the agent's --simulate would report them."""
    sim = simulated_gpus(node_id, model, count)
    gpu_list = tuple(GPU(g.uuid, g.model, g.memory_total_mib) for g in sim)
    return NodeState(node_id=node_id, gpus=gpu_list, nomad_node_id=f"nomad-{node_id}", **kwargs)  # type: ignore[arg-type]


def e2e_cluster() -> list[NodeState]:
    return [node("gpu-a", "h100_sxm", 8), node("gpu-b", "a100", 4), node("gpu-c", "l40s", 2)]


def request(chute: str = "chute-1", **selector: object) -> PlacementRequest:
    return PlacementRequest.from_selector(chute, NodeSelector(**selector))


def placed(result: Placement | Unschedulable) -> Placement:
    assert isinstance(result, Placement), getattr(result, "explanation", result)
    return result


def refused(result: Placement | Unschedulable) -> Unschedulable:
    assert isinstance(result, Unschedulable), result
    return result


def test_two_gpus_of_a100_or_h100_land_on_the_cheaper_a100_node() -> None:
    result = placed(place(e2e_cluster(), request(gpu_count=2, include=["a100", "h100_sxm"])))
    assert (result.node_id, result.nomad_node_id, result.model) == ("gpu-b", "nomad-gpu-b", "a100")
    assert result.gpu_count == 2
    assert set(result.gpu_uuids) <= {g.uuid for g in simulated_gpus("gpu-b", "a100", 4)}
    assert result.price_per_gpu == gpus.get("a100").hourly_usd
    assert result.hourly_price == pytest.approx(2 * 1.20)
    assert (result.nodes_total, result.nodes_feasible) == (3, 2)
    assert result.rejections == {Reason.WRONG_MODEL: 1}
    assert result.explanation == "gpu-b: 2x a100 at $1.20/GPU/h (2 of 3 nodes feasible)"


def test_four_gpus_twice_puts_the_second_instance_on_the_h100_node() -> None:
    req = request(gpu_count=4, include=["a100", "h100_sxm"])
    plan = place_many(e2e_cluster(), req, 3)
    assert plan.complete
    assert [p.node_id for p in plan.placements] == ["gpu-b", "gpu-a", "gpu-a"]
    taken = [u for p in plan.placements for u in p.gpu_uuids]
    assert len(taken) == len(set(taken)) == 12

    # The same, as two separate deploys: the second sees the first one's GPUs held by its allocation.
    first = placed(place(e2e_cluster(), req))
    nodes = [
        replace(n, gpus=mark_in_use(n.gpus, first.gpu_uuids), instances={"chute-1": 1}) if n.node_id == "gpu-b" else n
        for n in e2e_cluster()
    ]
    second = placed(place(nodes, req))
    assert (first.node_id, second.node_id) == ("gpu-b", "gpu-a")


def test_fourth_instance_of_four_gpus_is_unschedulable_with_counts() -> None:
    plan = place_many(e2e_cluster(), request(gpu_count=4, include=["a100", "h100_sxm"]), 4)
    assert len(plan.placements) == 3
    assert plan.unschedulable is not None
    assert plan.unschedulable.rejections == {Reason.WRONG_MODEL: 1, Reason.EXHAUSTED: 2}
    assert plan.unschedulable.explanation == "0 of 3 nodes: 2 not enough free GPUs, 1 wrong GPU model"
    assert "busy" in plan.unschedulable.hint


def test_min_vram_100_is_unschedulable_on_the_e2e_cluster() -> None:
    result = refused(place(e2e_cluster(), request(min_vram_gb_per_gpu=100)))
    assert result.rejections == {Reason.WRONG_MODEL: 3}
    assert result.counts() == {"wrong_model": 3}
    assert result.explanation == "0 of 3 nodes: 3 wrong GPU model"
    assert "include" in result.hint


def test_80_gb_request_fits_an_80_gb_card_that_reports_less_than_80_gib() -> None:
    # An H100 SXM reports 81559 MiB < 80 GiB; the catalog's 80 GB are decimal, so it must still qualify.
    assert gpus.get("h100_sxm").memory_mib < 80 * 1024
    assert min_vram_mib(80) <= gpus.get("h100_sxm").memory_mib
    result = placed(place(e2e_cluster(), request(min_vram_gb_per_gpu=80, include=["h100_sxm"])))
    assert result.node_id == "gpu-a"


def test_explanation_lists_reasons_by_count() -> None:
    nodes = [node(f"l40s-{i}", "l40s", 2) for i in range(9)]
    nodes += [node(f"a100-{i}", "a100", 1) for i in range(3)]
    nodes = [
        replace(n, gpus=mark_in_use(n.gpus, [g.uuid for g in n.gpus])) if "a100" in n.node_id else n for n in nodes
    ]
    result = refused(place(nodes, request(include=["a100"])))
    assert result.explanation == "0 of 12 nodes: 9 wrong GPU model, 3 not enough free GPUs"
    assert sum(result.rejections.values()) == 12


def test_every_rejection_reason_is_counted() -> None:
    small = GPU("GPU-small", "a100", 30000)  # an "a100" whose memory says otherwise
    sick = GPU("GPU-sick", "a100", 81920, healthy=False)
    nodes = [
        node("dead", "a100", 4, alive=False),
        node("drained", "a100", 4, eligible=False),
        NodeState("cpu-only"),
        NodeState("unknown-gpu", gpus=(GPU("GPU-x", None, 81920),)),
        node("l40s", "l40s", 4),
        node("h100", "h100_sxm", 4),
        NodeState("small-vram", gpus=(small, replace(small, uuid="GPU-small-2"))),
        NodeState("one-healthy", gpus=(node("x", "a100", 1).gpus[0], sick)),
        replace(node("busy", "a100", 2), gpus=mark_in_use(node("busy", "a100", 2).gpus, counts_by_model={"a100": 1})),
    ]
    req = PlacementRequest(
        "c", gpu_count=2, eligible_gpus=("a100", "h100_sxm"), min_vram_gb_per_gpu=40, max_price_per_gpu=2
    )
    result = refused(place(nodes, req))
    assert result.rejections == {
        Reason.NOT_ALIVE: 1,
        Reason.INELIGIBLE: 1,
        Reason.NO_GPUS: 2,
        Reason.WRONG_MODEL: 1,
        Reason.OVER_PRICE: 1,
        Reason.LOW_VRAM: 1,
        Reason.TOO_FEW_GPUS: 1,
        Reason.EXHAUSTED: 1,
    }
    assert sum(result.rejections.values()) == len(nodes)
    assert "busy" in result.hint  # the reason closest to success gives the hint


def test_a_node_whose_gpus_are_all_unhealthy_has_too_few_gpus_not_too_little_vram() -> None:
    sick = tuple(replace(g, healthy=False) for g in node("n", "a100", 2).gpus)
    result = refused(place([NodeState("n", gpus=sick)], request(include=["a100"])))
    assert result.rejections == {Reason.TOO_FEW_GPUS: 1}


def test_cheapest_model_beats_a_tighter_fit() -> None:
    nodes = [node("h100-tight", "h100_sxm", 1), node("a100-roomy", "a100", 8)]
    assert placed(place(nodes, request(include=["a100", "h100_sxm"]))).node_id == "a100-roomy"


def test_tightest_fit_keeps_big_nodes_whole() -> None:
    nodes = [node("a-eight", "a100", 8), node("b-two", "a100", 2), node("c-four", "a100", 4)]
    result = placed(place(nodes, request(gpu_count=2, include=["a100"])))
    assert (result.node_id, result.free_after) == ("b-two", 0)


def test_spread_prefers_nodes_without_the_chute_when_fit_ties() -> None:
    nodes = [node("a", "a100", 4, instances={"chute-1": 1}), node("b", "a100", 4, instances={"other": 3})]
    assert placed(place(nodes, request(include=["a100"]))).node_id == "b"
    # Without instances the tie goes to the smaller node id, every time.
    plain = [node("b", "a100", 4), node("a", "a100", 4)]
    assert placed(place(plain, request(include=["a100"]))).node_id == "a"


def test_place_many_spreads_only_when_the_fit_ties() -> None:
    nodes = [node("a", "a100", 2), node("b", "a100", 2)]
    plan = place_many(nodes, request(include=["a100"]), 4)
    # Tightest fit first: fill "a" (2 -> 1 -> 0) before "b"; within a tie spread by instances.
    assert [p.node_id for p in plan.placements] == ["a", "a", "b", "b"]
    assert [p.nodes_feasible for p in plan.placements] == [2, 2, 1, 1]
    assert plan.placements[2].rejections == {Reason.EXHAUSTED: 1}
    nodes4 = [node("a", "a100", 4), node("b", "a100", 4)]
    plan = place_many(nodes4, request(gpu_count=2, include=["a100"]), 2)
    assert [p.node_id for p in plan.placements] == ["a", "a"]


def test_mixed_model_node_serves_a_request_from_one_model() -> None:
    a100 = node("mixed", "a100", 2).gpus
    h100 = tuple(
        GPU(g.uuid, g.model, g.memory_total_mib) for g in simulated_gpus("mixed", "h100_sxm", 4, start_index=2)
    )
    mixed = NodeState("mixed", gpus=a100 + h100)
    # 3 GPUs: the node has 6, but no single model has 3 of the cheaper one.
    result = placed(place([mixed], request(gpu_count=3, include=["a100", "h100_sxm"])))
    assert result.model == "h100_sxm"
    assert set(result.gpu_uuids) <= {g.uuid for g in h100}
    # Counted once, under the furthest stage any of its models reached.
    result2 = refused(place([mixed, node("l4", "l4", 1)], request(gpu_count=4, include=["a100"])))
    assert result2.rejections == {Reason.TOO_FEW_GPUS: 1, Reason.WRONG_MODEL: 1}


def test_unknown_gpu_and_mig_devices_are_not_usable() -> None:
    result = refused(place([NodeState("mig", gpus=(GPU("MIG-1", None, 10000),))], request()))
    assert result.rejections == {Reason.NO_GPUS: 1}


def test_empty_cluster_says_no_node_registered() -> None:
    result = refused(place([], request()))
    assert result.explanation == "0 of 0 nodes: no GPU node has registered"
    assert "chutes-agent" in result.hint


def test_snapshot_is_reusable_and_rejects_duplicate_nodes() -> None:
    cluster = Cluster.build(e2e_cluster())
    first = place(cluster, request(gpu_count=2, include=["a100"]))
    assert first == place(cluster, request(gpu_count=2, include=["a100"]))
    with pytest.raises(ValueError, match="twice"):
        Cluster.build([node("x", "a100", 1), node("x", "a100", 1)])


def test_custom_prices_change_the_ranking() -> None:
    cluster = Cluster.build(e2e_cluster(), prices={"a100": 5.0, "h100_sxm": 1.0, "l40s": 0.5})
    result = placed(place(cluster, request(gpu_count=2, include=["a100", "h100_sxm"])))
    assert (result.node_id, result.price_per_gpu) == ("gpu-a", 1.0)


def test_mark_in_use_by_uuid_and_by_model_count() -> None:
    gpu_list = node("n", "a100", 4).gpus
    marked = mark_in_use(gpu_list, [gpu_list[2].uuid], counts_by_model={"a100": 2})
    assert [g.in_use for g in marked] == [True, True, True, False]


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="gpu_count"):
        PlacementRequest("c", gpu_count=0, eligible_gpus=("a100",))
    with pytest.raises(ValueError, match="eligible"):
        PlacementRequest("c", gpu_count=1, eligible_gpus=())
