"""Properties of placement on random clusters, checked against a brute-force per-node oracle."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from chutes import gpus
from chutes.scheduler.placement import (
    GPU,
    Cluster,
    NodeState,
    Placement,
    PlacementRequest,
    Reason,
    Unschedulable,
    mark_in_use,
    place,
    place_many,
)

MODELS = ("l40s", "a100", "a100_sxm", "h100_sxm")
STAGE = list(Reason)  # pipeline order
FEASIBLE = len(STAGE)


Key = tuple[float, int, int, str]


def oracle(nodes: list[NodeState], req: PlacementRequest) -> tuple[Counter[Reason], int, Key | None]:
    """Every node through every check, the obvious way: (rejections, feasible nodes, best rank key)."""
    counts: Counter[Reason] = Counter()
    feasible = 0
    best: Key | None = None
    for n in nodes:
        if not n.alive:
            counts[Reason.NOT_ALIVE] += 1
            continue
        if not n.eligible:
            counts[Reason.INELIGIBLE] += 1
            continue
        models = sorted({g.model for g in n.gpus if g.model in gpus.CATALOG})
        if not models:
            counts[Reason.NO_GPUS] += 1
            continue
        furthest = -1
        for model in models:
            members = [g for g in n.gpus if g.model == model]
            healthy = [g for g in members if g.healthy]
            vram = min(g.memory_mib for g in (healthy or members))
            free = len([g for g in healthy if not g.in_use])
            price = gpus.CATALOG[model].hourly_usd
            if model not in req.eligible_gpus:
                stage = STAGE.index(Reason.WRONG_MODEL)
            elif req.max_price_per_gpu is not None and price > req.max_price_per_gpu:
                stage = STAGE.index(Reason.OVER_PRICE)
            elif vram < req.min_vram_mib:
                stage = STAGE.index(Reason.LOW_VRAM)
            elif len(healthy) < req.gpu_count:
                stage = STAGE.index(Reason.TOO_FEW_GPUS)
            elif free < req.gpu_count:
                stage = STAGE.index(Reason.EXHAUSTED)
            else:
                stage = FEASIBLE
                key = (price, free - req.gpu_count, n.instances.get(req.chute_id, 0), n.node_id)
                best = key if best is None or key < best else best
            furthest = max(furthest, stage)
        if furthest == FEASIBLE:
            feasible += 1
        else:
            counts[STAGE[furthest]] += 1
    return counts, feasible, best


@st.composite
def gpu_lists(draw: st.DrawFn, node_id: str) -> tuple[GPU, ...]:
    out: list[GPU] = []
    for model in draw(st.lists(st.sampled_from((*MODELS, None)), min_size=0, max_size=2, unique=True)):
        memory = gpus.CATALOG[model].memory_mib if model else 20000
        memory = draw(st.sampled_from((memory, memory, 30000)))  # now and then a card smaller than its model
        for _ in range(draw(st.integers(1, 5))):
            index = len(out)
            out.append(
                GPU(
                    uuid=f"GPU-{node_id}-{index}",
                    model=model,
                    memory_mib=memory,
                    healthy=draw(st.integers(0, 7)) > 0,
                    in_use=draw(st.integers(0, 3)) == 0,
                )
            )
    return tuple(out)


@st.composite
def clusters(draw: st.DrawFn) -> list[NodeState]:
    nodes = []
    for i in range(draw(st.integers(0, 12))):
        node_id = f"n{i:02d}"
        nodes.append(
            NodeState(
                node_id=node_id,
                gpus=draw(gpu_lists(node_id)),
                alive=draw(st.integers(0, 9)) > 0,
                eligible=draw(st.integers(0, 9)) > 0,
                instances={"c": draw(st.integers(0, 2))},
            )
        )
    return draw(st.permutations(nodes))


requests = st.builds(
    PlacementRequest,
    chute_id=st.just("c"),
    gpu_count=st.integers(1, 4),
    eligible_gpus=st.lists(st.sampled_from(MODELS), min_size=1, unique=True).map(tuple),
    min_vram_gb_per_gpu=st.sampled_from((16, 40, 48, 80)),
    max_price_per_gpu=st.sampled_from((None, None, 1.0, 1.2, 2.0)),
)


@settings(max_examples=200, deadline=None)
@given(clusters(), requests)
def test_place_agrees_with_the_brute_force_oracle(nodes: list[NodeState], req: PlacementRequest) -> None:
    counts, feasible, best = oracle(nodes, req)
    result = place(nodes, req)
    assert dict(result.rejections) == {r: n for r, n in counts.items() if n}
    if best is None:
        assert isinstance(result, Unschedulable)
        assert sum(result.rejections.values()) == len(nodes) == result.nodes_total
        return
    assert isinstance(result, Placement)
    assert (result.price_per_gpu, result.free_after, result.node_id) == (best[0], best[1], best[3])
    assert result.nodes_feasible == feasible
    assert result.nodes_feasible + sum(result.rejections.values()) == len(nodes)
    # The chosen GPUs: on the chosen node, of the chosen model, healthy, free, distinct, as many as asked.
    chosen = next(n for n in nodes if n.node_id == result.node_id)
    by_uuid = {g.uuid: g for g in chosen.gpus}
    picked = [by_uuid[u] for u in result.gpu_uuids]
    assert len(set(result.gpu_uuids)) == req.gpu_count
    assert all(g.model == result.model and g.healthy and not g.in_use for g in picked)
    assert result.model in req.eligible_gpus
    assert all(g.memory_mib >= req.min_vram_mib for g in picked)


@settings(max_examples=100, deadline=None)
@given(clusters(), requests, st.integers(1, 6))
def test_place_many_equals_placing_one_by_one_on_the_updated_cluster(
    nodes: list[NodeState], req: PlacementRequest, count: int
) -> None:
    plan = place_many(Cluster.build(nodes), req, count)
    state = {n.node_id: n for n in nodes}
    for placement in plan.placements:
        assert place(list(state.values()), req) == placement
        assert placement.nodes_feasible + sum(placement.rejections.values()) == len(nodes)
        n = state[placement.node_id]
        instances = dict(n.instances)
        instances[req.chute_id] = instances.get(req.chute_id, 0) + 1
        state[n.node_id] = replace(n, gpus=mark_in_use(n.gpus, placement.gpu_uuids), instances=instances)
    if plan.unschedulable is None:
        assert len(plan.placements) == count
    else:
        assert len(plan.placements) < count
        assert place(list(state.values()), req) == plan.unschedulable
    taken = [u for p in plan.placements for u in p.gpu_uuids]
    assert len(taken) == len(set(taken))
