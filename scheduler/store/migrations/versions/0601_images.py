"""Images built by the platform: one row per build context; the built image a chute runs (chutes.image_ref).

Revision ID: 0601
Revises: 0501
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0601"
down_revision = "0501"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.String(length=32), nullable=False),
        sa.Column("username", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("base", sa.String(length=512), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=1024), nullable=True),
        sa.Column("digest", sa.String(length=80), nullable=True),
        sa.Column("runtime_version", sa.String(length=64), nullable=False),
        sa.Column("dockerfile", sa.Text(), nullable=False),
        sa.Column("context", sa.LargeBinary(), nullable=False),
        sa.Column("context_bytes", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("build_job_id", sa.String(length=128), nullable=True),
        sa.Column("alloc_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("log", sa.Text(), nullable=True),
        sa.Column("log_location", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("queued_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_images_owner_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
    )
    op.create_index(op.f("ix_images_owner_id"), "images", ["owner_id"], unique=False)
    op.create_index(op.f("ix_images_status"), "images", ["status"], unique=False)
    with op.batch_alter_table("chutes") as batch:
        batch.add_column(sa.Column("image_ref", sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chutes") as batch:
        batch.drop_column("image_ref")
    op.drop_index(op.f("ix_images_status"), table_name="images")
    op.drop_index(op.f("ix_images_owner_id"), table_name="images")
    op.drop_table("images")
