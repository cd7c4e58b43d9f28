"""Control-plane state that must outlive one scheduler process: GPU reservations, the autoscaler's memory and
the gateways' utilisation reports.

``GpuReservation``: GPUs promised to a deploy (or a scale-up) between the placement decision and Nomad placing
the instance; placement counts them as taken, so two concurrent deploys cannot be promised the same GPUs.
``AutoscalerState``: each chute's load window and idle clock, written by the leader every tick, so that a new
leader continues where the last one stopped.
``GatewayReport``: the latest utilisation report of each gateway (``chutes.scheduler.utilisation``); any replica
receives it, the leader's autoscaler reads it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from chutes.scheduler.store.base import Base, new_id, now


class GpuReservation(Base):
    """``gpu_count`` GPUs of ``model`` on ``node_id`` for one instance of ``chute_id``, until ``expires_at``."""

    __tablename__ = "gpu_reservations"
    __table_args__ = (Index("ix_gpu_reservations_node", "node_id"), Index("ix_gpu_reservations_chute", "chute_id"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    chute_id: Mapped[str] = mapped_column(String(36))
    node_id: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(32))
    gpu_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float)


class AutoscalerState(Base):
    """The autoscaler's memory of one chute (``chutes.scheduler.autoscaler.ChuteHistory`` as JSON)."""

    __tablename__ = "autoscaler_state"

    chute_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class GatewayReport(Base):
    """The latest utilisation report of one gateway, and the API key it belongs to."""

    __tablename__ = "gateway_reports"

    gateway_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[float] = mapped_column(Float)  # the scheduler's clock: freshness never trusts the gateway's
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
