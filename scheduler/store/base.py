"""The declarative base shared by every table module of the scheduler's store.

Table modules (``models.py`` here, and e.g. metering's own module) each import ``Base`` from this module;
``TABLE_MODULES`` lists them so that Alembic and the tests see every table. A listed module that is not
installed is skipped, so that a part of the scheduler can land later without touching this file.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from chutes.core.registry import import_all

# Deterministic constraint names, so that migrations can refer to them on PostgreSQL and SQLite alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TABLE_MODULES = (
    "chutes.scheduler.store.models",
    "chutes.scheduler.store.metering_models",
    "chutes.scheduler.store.secret_models",
    "chutes.scheduler.store.control_models",
    "chutes.scheduler.store.image_models",
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def load_table_modules() -> MetaData:
    """Import every table module so that ``Base.metadata`` knows all tables; returns it."""
    import_all(TABLE_MODULES, "chutes.scheduler.store.base.TABLE_MODULES")
    return Base.metadata


def new_id() -> str:
    return uuid.uuid4().hex


def now() -> float:
    return time.time()
