"""The scheduler's store: SQLAlchemy 2 (async) tables, repositories and Alembic migrations."""

from chutes.scheduler.store.db import Store, StoreError

__all__ = ["Store", "StoreError"]
