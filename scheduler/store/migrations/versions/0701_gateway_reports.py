"""The gateways' utilisation reports (the autoscaler reads them instead of scraping instances).

Revision ID: 0701
Revises: 0601
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0701"
down_revision = "0601"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_reports",
        sa.Column("gateway_id", sa.String(length=128), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("gateway_id", name=op.f("pk_gateway_reports")),
    )


def downgrade() -> None:
    op.drop_table("gateway_reports")
