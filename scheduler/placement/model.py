"""Values of placement: the cluster as the scheduler sees it, what a chute asks for, and what it gets.

Plain frozen dataclasses, built by the inventory reader (or by tests and benchmarks) and never mutated: a
decision is a pure function of them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from chutes import gpus
from chutes.chute.node_selector import NodeSelector


def min_vram_mib(min_vram_gb: float) -> int:
    """The per-GPU memory floor in MiB for a ``min_vram_gb_per_gpu`` in catalog GB (decimal gigabytes).

    The catalog's sizes are decimal GB, NVML and Nomad's ``${device.attr.memory}`` are MiB: an 80 GB H100
    reports 81559 MiB, which is *less* than "80 GiB" (81920 MiB). Placement and the rendered device
    constraint both use this one conversion, so a model the NodeSelector calls eligible is never refused
    by Nomad for its memory.
    """
    return int(min_vram_gb * gpus.MIB_PER_GB)


@dataclass(frozen=True, slots=True)
class GPU:
    """One physical GPU of a node."""

    uuid: str
    model: str | None  # catalog id; None for a GPU the catalog does not know (or a MIG slice)
    memory_mib: int
    healthy: bool = True
    in_use: bool = False  # held by an allocation (from Nomad's AllocatedResources device IDs)


@dataclass(frozen=True, slots=True)
class NodeState:
    """One GPU node: its GPUs, whether it can take work, and how many instances of each chute it runs."""

    node_id: str
    gpus: tuple[GPU, ...] = ()
    nomad_node_id: str | None = None
    alive: bool = True  # the node's chutes-agent TTL check is passing
    eligible: bool = True  # Nomad scheduling eligibility (false while draining or marked ineligible)
    instances: Mapping[str, int] = field(default_factory=dict)  # chute_id -> allocations on this node


def mark_in_use(
    node_gpus: Sequence[GPU], uuids: Iterable[str] = (), counts_by_model: Mapping[str, int] | None = None
) -> tuple[GPU, ...]:
    """``node_gpus`` with the GPUs held by allocations marked in use.

    ``uuids`` are device IDs from allocations; ``counts_by_model`` covers allocations whose device IDs are
    unknown (only how many GPUs of which model they hold): that many still-free GPUs of the model are taken,
    lowest index first.
    """
    held = set(uuids)
    out = [replace(g, in_use=True) if g.uuid in held and not g.in_use else g for g in node_gpus]
    for model, count in (counts_by_model or {}).items():
        left = count
        for i, g in enumerate(out):
            if left <= 0:
                break
            if g.model == model and not g.in_use:
                out[i] = replace(g, in_use=True)
                left -= 1
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """What one instance of a chute needs (the resolved NodeSelector)."""

    chute_id: str
    gpu_count: int
    eligible_gpus: tuple[str, ...]
    min_vram_gb_per_gpu: int = 16
    max_price_per_gpu: float | None = None

    def __post_init__(self) -> None:
        if self.gpu_count < 1:
            raise ValueError(f"gpu_count must be at least 1, not {self.gpu_count}")
        if not self.eligible_gpus:
            raise ValueError("eligible_gpus is empty: no GPU model can run this chute")

    @classmethod
    def from_selector(cls, chute_id: str, selector: NodeSelector) -> PlacementRequest:
        """The request for one instance of a chute with ``selector``."""
        return cls(
            chute_id=chute_id,
            gpu_count=selector.gpu_count,
            eligible_gpus=tuple(selector.eligible_gpus),
            min_vram_gb_per_gpu=selector.min_vram_gb_per_gpu,
            max_price_per_gpu=selector.max_hourly_price_per_gpu,
        )

    @property
    def min_vram_mib(self) -> int:
        return min_vram_mib(self.min_vram_gb_per_gpu)


class Reason(enum.StrEnum):
    """Why a node cannot take an instance, in pipeline order: a node is counted under the first it fails.

    A node with GPUs of several models is counted under the furthest stage that any of its models reached.
    """

    NOT_ALIVE = "not_alive"
    INELIGIBLE = "ineligible"
    NO_GPUS = "no_gpus"
    WRONG_MODEL = "wrong_model"
    OVER_PRICE = "over_price"
    LOW_VRAM = "low_vram"
    TOO_FEW_GPUS = "too_few_gpus"
    EXHAUSTED = "exhausted"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def hint(self) -> str:
        return _HINTS[self]


_LABELS: dict[Reason, str] = {
    Reason.NOT_ALIVE: "agent not alive",
    Reason.INELIGIBLE: "ineligible in Nomad",
    Reason.NO_GPUS: "no usable GPUs",
    Reason.WRONG_MODEL: "wrong GPU model",
    Reason.OVER_PRICE: "over price cap",
    Reason.LOW_VRAM: "too little VRAM per GPU",
    Reason.TOO_FEW_GPUS: "too few healthy GPUs",
    Reason.EXHAUSTED: "not enough free GPUs",
}
_HINTS: dict[Reason, str] = {
    Reason.NOT_ALIVE: "start chutes-agent on the GPU nodes (its Consul check must be passing)",
    Reason.INELIGIBLE: "mark the nodes eligible in Nomad (nomad node eligibility -enable) or finish the drain",
    Reason.NO_GPUS: "the nodes report no GPU of a known model; check the agent's inventory (chutes nodes)",
    Reason.WRONG_MODEL: "widen NodeSelector include/exclude, or add nodes with an eligible GPU model",
    Reason.OVER_PRICE: "raise max_hourly_price_per_gpu or include cheaper GPU models",
    Reason.LOW_VRAM: "lower min_vram_gb_per_gpu or add nodes with larger GPUs",
    Reason.TOO_FEW_GPUS: "lower gpu_count or add nodes with more GPUs of an eligible model",
    Reason.EXHAUSTED: "the matching GPUs are busy: the chute is placed once some free up, or add capacity",
}
# Rejection stages in the order a node passes them; the index is how far a node got.
STAGES: tuple[Reason, ...] = tuple(Reason)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one instance goes: a node, a GPU model on it and the GPUs it takes."""

    chute_id: str
    node_id: str
    nomad_node_id: str | None
    model: str
    gpu_uuids: tuple[str, ...]
    price_per_gpu: float
    free_after: int  # free GPUs of ``model`` left on the node after this placement
    nodes_total: int
    nodes_feasible: int
    rejections: Mapping[Reason, int]

    @property
    def gpu_count(self) -> int:
        return len(self.gpu_uuids)

    @property
    def hourly_price(self) -> float:
        return round(self.price_per_gpu * self.gpu_count, 6)

    @property
    def explanation(self) -> str:
        return (
            f"{self.node_id}: {self.gpu_count}x {self.model} at ${self.price_per_gpu:.2f}/GPU/h "
            f"({self.nodes_feasible} of {self.nodes_total} nodes feasible)"
        )


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """No node can take the instance; ``rejections`` counts every node once, under its reason."""

    chute_id: str
    nodes_total: int
    rejections: Mapping[Reason, int]

    @property
    def explanation(self) -> str:
        """E.g. "0 of 12 nodes: 9 wrong GPU model, 3 not enough free GPUs"."""
        if self.nodes_total == 0:
            return "0 of 0 nodes: no GPU node has registered"
        parts = sorted(((n, r) for r, n in self.rejections.items() if n), key=lambda p: (-p[0], STAGES.index(p[1])))
        return f"0 of {self.nodes_total} nodes: " + ", ".join(f"{n} {r.label}" for n, r in parts)

    @property
    def hint(self) -> str:
        """What to change, for the reason closest to success (the most actionable one)."""
        if self.nodes_total == 0:
            return Reason.NOT_ALIVE.hint
        present = [r for r in STAGES if self.rejections.get(r)]
        return present[-1].hint if present else Reason.NOT_ALIVE.hint

    def counts(self) -> dict[str, int]:
        """The rejection counts with plain string keys (for JSON)."""
        return {str(r): n for r, n in self.rejections.items() if n}


PlacementResult = Placement | Unschedulable
