"""Chute secrets: chute_secrets (sealed values) and secret_syncs (what the chute's Nomad Variables hold).

Revision ID: 0501
Revises: 0401
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0501"
down_revision = "0401"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chute_secrets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner_id", sa.String(length=32), nullable=False),
        sa.Column("chute_id", sa.String(length=36), nullable=False),
        sa.Column("chute_name", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_chute_secrets_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chute_secrets")),
        sa.UniqueConstraint("chute_id", "name", name="uq_chute_secrets_chute_id_name"),
    )
    op.create_index(op.f("ix_chute_secrets_owner_id"), "chute_secrets", ["owner_id"], unique=False)
    op.create_index(op.f("ix_chute_secrets_chute_id"), "chute_secrets", ["chute_id"], unique=False)
    op.create_table(
        "secret_syncs",
        sa.Column("chute_id", sa.String(length=36), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("synced_generation", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("chute_id", name=op.f("pk_secret_syncs")),
    )


def downgrade() -> None:
    op.drop_table("secret_syncs")
    op.drop_index(op.f("ix_chute_secrets_chute_id"), table_name="chute_secrets")
    op.drop_index(op.f("ix_chute_secrets_owner_id"), table_name="chute_secrets")
    op.drop_table("chute_secrets")
