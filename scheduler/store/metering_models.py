"""Metering tables: one row per invocation (from the gateways) and one per instance's billable GPU time.

No foreign keys to users or chutes: usage is a ledger, kept after a chute (or its instances) is deleted. So
each GPU-time row carries what billing needs (owner, chute name, GPU model and count, the hourly price when
the instance became ready). Times are UNIX seconds (float), as in ``models.py``; money is a Decimal.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import BigInteger, Float, Index, Integer, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from chutes.scheduler.store.base import Base, now


class Invocation(Base):
    """One call through a gateway."""

    __tablename__ = "invocations"
    __table_args__ = (
        Index("ix_invocations_chute_started", "chute_id", "started_at"),
        Index("ix_invocations_caller_day", "caller_id", "day"),
        Index("ix_invocations_day", "day"),
    )

    invocation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chute_id: Mapped[str] = mapped_column(String(36))
    caller_id: Mapped[str] = mapped_column(String(32))
    cord: Mapped[str] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float)
    bytes_in: Mapped[int] = mapped_column(BigInteger)
    bytes_out: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[float] = mapped_column(Float)
    day: Mapped[int] = mapped_column(Integer)  # UTC days since 1970-01-01 of started_at, to group by in SQL
    recorded_at: Mapped[float] = mapped_column(Float, default=now)


class InstanceUsage(Base):
    """The billable GPU time of one instance (a Nomad allocation): from ready to stop."""

    __tablename__ = "instance_usage"
    __table_args__ = (
        Index("ix_instance_usage_owner_ready", "owner_id", "ready_at"),
        Index("ix_instance_usage_chute_ready", "chute_id", "ready_at"),
    )

    alloc_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chute_id: Mapped[str] = mapped_column(String(36))
    chute_name: Mapped[str] = mapped_column(String(128))
    owner_id: Mapped[str] = mapped_column(String(32))
    owner_username: Mapped[str] = mapped_column(String(63))
    node_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    gpu_model: Mapped[str | None] = mapped_column(String(32), nullable=True)
    gpu_count: Mapped[int] = mapped_column(Integer)
    hourly_usd_per_gpu: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    ready_at: Mapped[float] = mapped_column(Float)
    stopped_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_seen_at: Mapped[float] = mapped_column(Float)
