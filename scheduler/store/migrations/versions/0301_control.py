"""Control plane state: GPU reservations, the autoscaler's memory, when an instance stopped being ready.

Revision ID: 0301
Revises: 0101_metering
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0301"
down_revision = "0101_metering"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gpu_reservations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("chute_id", sa.String(length=36), nullable=False),
        sa.Column("node_id", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpu_reservations")),
    )
    op.create_index("ix_gpu_reservations_node", "gpu_reservations", ["node_id"], unique=False)
    op.create_index("ix_gpu_reservations_chute", "gpu_reservations", ["chute_id"], unique=False)
    op.create_table(
        "autoscaler_state",
        sa.Column("chute_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("chute_id", name=op.f("pk_autoscaler_state")),
    )
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("unready_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("unready_at")
    op.drop_table("autoscaler_state")
    op.drop_index("ix_gpu_reservations_chute", table_name="gpu_reservations")
    op.drop_index("ix_gpu_reservations_node", table_name="gpu_reservations")
    op.drop_table("gpu_reservations")
