"""Metering: invocations and instance_usage.

Revision ID: 0101_metering
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0101_metering"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invocations",
        sa.Column("invocation_id", sa.String(length=64), nullable=False),
        sa.Column("chute_id", sa.String(length=36), nullable=False),
        sa.Column("caller_id", sa.String(length=32), nullable=False),
        sa.Column("cord", sa.String(length=128), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("invocation_id", name=op.f("pk_invocations")),
    )
    op.create_index("ix_invocations_chute_started", "invocations", ["chute_id", "started_at"], unique=False)
    op.create_index("ix_invocations_caller_day", "invocations", ["caller_id", "day"], unique=False)
    op.create_index("ix_invocations_day", "invocations", ["day"], unique=False)
    op.create_table(
        "instance_usage",
        sa.Column("alloc_id", sa.String(length=64), nullable=False),
        sa.Column("chute_id", sa.String(length=36), nullable=False),
        sa.Column("chute_name", sa.String(length=128), nullable=False),
        sa.Column("owner_id", sa.String(length=32), nullable=False),
        sa.Column("owner_username", sa.String(length=63), nullable=False),
        sa.Column("node_id", sa.String(length=128), nullable=True),
        sa.Column("gpu_model", sa.String(length=32), nullable=True),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("hourly_usd_per_gpu", sa.Numeric(precision=12, scale=4), nullable=False),
        sa.Column("ready_at", sa.Float(), nullable=False),
        sa.Column("stopped_at", sa.Float(), nullable=True),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("alloc_id", name=op.f("pk_instance_usage")),
    )
    op.create_index("ix_instance_usage_owner_ready", "instance_usage", ["owner_id", "ready_at"], unique=False)
    op.create_index("ix_instance_usage_chute_ready", "instance_usage", ["chute_id", "ready_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_instance_usage_chute_ready", table_name="instance_usage")
    op.drop_index("ix_instance_usage_owner_ready", table_name="instance_usage")
    op.drop_table("instance_usage")
    op.drop_index("ix_invocations_day", table_name="invocations")
    op.drop_index("ix_invocations_caller_day", table_name="invocations")
    op.drop_index("ix_invocations_chute_started", table_name="invocations")
    op.drop_table("invocations")
