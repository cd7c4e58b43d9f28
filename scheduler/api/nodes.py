"""GPU nodes: the agents' inventories joined with agent liveness and what Nomad's allocations hold."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter

from chutes.core.inventory import NodeInventory
from chutes.scheduler.api.deps import ServicesDep, UserDep
from chutes.scheduler.api.errors import APIError, ErrorOut
from chutes.scheduler.api.schemas import GPUOut, NodeOut
from chutes.scheduler.deploy import cluster_snapshot
from chutes.scheduler.inventory_reader import InventorySnapshot
from chutes.scheduler.placement import NodeState
from chutes.scheduler.services import Services

router = APIRouter(tags=["nodes"], responses={401: {"model": ErrorOut}, 503: {"model": ErrorOut}})


async def snapshot(services: Services) -> InventorySnapshot:
    """Placement's view of the nodes, from the kept-current cluster view (no read per request)."""
    return (await cluster_snapshot(services)).inventory


def node_out(node: NodeState, inventory: NodeInventory) -> NodeOut:
    in_use = {g.uuid for g in node.gpus if g.in_use}
    models = Counter(g.model for g in inventory.gpus if g.model)
    return NodeOut(
        node_id=node.node_id,
        hostname=inventory.hostname,
        nomad_node_id=node.nomad_node_id,
        alive=node.alive,
        eligible=node.eligible,
        gpu_model=models.most_common(1)[0][0] if models else None,
        gpu_count=len(inventory.gpus),
        gpus_free=sum(1 for g in node.gpus if not g.in_use and g.healthy and g.model),
        gpus=[
            GPUOut(
                index=g.index,
                uuid=g.uuid,
                name=g.name,
                model=g.model,
                memory_total_mib=g.memory_total_mib,
                healthy=g.healthy,
                in_use=g.uuid in in_use,
                utilization_pct=g.utilization_pct,
            )
            for g in inventory.gpus
        ],
        instances=dict(node.instances),
        updated_at=inventory.updated_at,
    )


@router.get("/v1/nodes", response_model=list[NodeOut])
async def list_nodes(_: UserDep, services: ServicesDep) -> list[NodeOut]:
    """Every GPU node that published an inventory, with liveness, free GPUs and instances per chute."""
    snap = await snapshot(services)
    return [node_out(n, snap.inventories[n.node_id]) for n in snap.nodes]


@router.get("/v1/nodes/{node_id}", response_model=NodeOut, responses={404: {"model": ErrorOut}})
async def get_node(node_id: str, _: UserDep, services: ServicesDep) -> NodeOut:
    """One node by its id (the agent's node id)."""
    snap = await snapshot(services)
    node = snap.node(node_id)
    if node is None:
        raise APIError(404, f"node {node_id!r} not found", "list nodes with GET /v1/nodes")
    return node_out(node, snap.inventories[node_id])
