"""Alembic environment: runs on the connection that ``Store.migrate`` passes in (no alembic.ini needed)."""

from __future__ import annotations

from alembic import context

from chutes.scheduler.store.base import load_table_modules

target_metadata = load_table_modules()
connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only Store.migrate runs migrations
    raise RuntimeError("run migrations through chutes.scheduler.store.Store.migrate()")

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
