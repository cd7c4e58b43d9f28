"""Host labels: each chute's ``<username>-<slug>`` wildcard address label, unique across chutes.

Before this, the gateway split a host label into every (username, slug) pair it could stand for and served
the first chute found, so ``acme``'s chute ``research-chat`` could take ``acme-research``'s ``chat``
(``acme-research-chat.<domain>``). Existing chutes get their label in creation order; a chute whose label an
older chute already holds gets none (it keeps its path address, and its owner sees ``host_label: null``).

Also ``shares.adopted``: sharing grants calling only, except to the user who deployed a chute for an adopted
owner on a dev stack (``dev_adopt_users``), who manages it as the owner would.

Revision ID: 0401
Revises: 0301
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0401"
down_revision = "0301"
branch_labels = None
depends_on = None

MAX_HOST_LABEL = 63  # chutes.identity.MAX_HOST_LABEL at the time of writing


def upgrade() -> None:
    with op.batch_alter_table("chutes") as batch:
        batch.add_column(sa.Column("host_label", sa.String(length=192), nullable=True))
    chutes = sa.table(
        "chutes",
        sa.column("id", sa.String()),
        sa.column("username", sa.String()),
        sa.column("slug", sa.String()),
        sa.column("created_at", sa.Float()),
        sa.column("host_label", sa.String()),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(chutes.c.id, chutes.c.username, chutes.c.slug).order_by(chutes.c.created_at, chutes.c.id)
    )
    taken: set[str] = set()
    for chute_id, username, slug in rows.all():
        label = f"{username}-{slug}"
        if len(label) > MAX_HOST_LABEL or label in taken:
            continue
        taken.add(label)
        bind.execute(sa.update(chutes).where(chutes.c.id == chute_id).values(host_label=label))
    with op.batch_alter_table("chutes") as batch:
        batch.create_unique_constraint(op.f("uq_chutes_host_label"), ["host_label"])
    with op.batch_alter_table("shares") as batch:
        batch.add_column(sa.Column("adopted", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("shares") as batch:
        batch.drop_column("adopted")
    with op.batch_alter_table("chutes") as batch:
        batch.drop_constraint(op.f("uq_chutes_host_label"), type_="unique")
        batch.drop_column("host_label")
