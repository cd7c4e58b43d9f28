"""The store's engine: SQLite (aiosqlite) by default, PostgreSQL (asyncpg) by URL; migrations at start-up.

``Store.session()`` yields an ``AsyncSession`` inside one transaction that commits on success and rolls back
on error. Repositories (``users.py``, ``chutes.py``, ...) are plain async functions over such a session, so a
caller can group several of them in one transaction.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from chutes.scheduler.store.base import load_table_modules

log = logging.getLogger(__name__)

MIGRATIONS = "chutes.scheduler.store:migrations"
# Any constant: schedulers starting together on one PostgreSQL database migrate one after the other.
_MIGRATION_LOCK = 0x6368757465730001


class StoreError(RuntimeError):
    """The database cannot be opened or migrated; the message says which URL and why."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_engine(url: str, *, schema: str | None = None) -> AsyncEngine:
    """An async engine for ``url``; ``schema`` (PostgreSQL only) sets the search path, e.g. for tests."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.drivername != "sqlite+aiosqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    elif parsed.get_backend_name() == "postgresql":
        if parsed.drivername != "postgresql+asyncpg":
            parsed = parsed.set(drivername="postgresql+asyncpg")
        if schema:
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        kwargs["pool_pre_ping"] = True
    else:
        raise StoreError(f"unsupported database URL {url!r}: use sqlite+aiosqlite:///FILE or postgresql+asyncpg://…")
    engine = create_async_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", MIGRATIONS)
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


@asynccontextmanager
async def _file_lock(path: Path | None) -> AsyncIterator[None]:
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class Store:
    """One database: engine, sessions and migrations."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = url
        self.engine = create_engine(url, schema=schema)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._locks: dict[str, asyncio.Lock] = {}
        load_table_modules()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (Alembic); safe to run from several schedulers at once.

        PostgreSQL serialises migrations with an advisory lock; SQLite runs DDL outside transactions, so
        processes sharing one database file take an exclusive lock on a file beside it.
        """
        database = self.engine.url.database
        lock_path = (
            Path(f"{database}.migrate.lock")
            if self.dialect == "sqlite" and database not in (None, "", ":memory:")
            else None
        )
        try:
            async with _file_lock(lock_path), self.engine.begin() as conn:
                await conn.run_sync(_upgrade, revision)
        except OSError as exc:
            raise StoreError(f"cannot reach the database at {self.engine.url!r}: {exc}") from exc

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed when the block ends, rolled back if it raises."""
        async with self._sessions.begin() as session:
            yield session

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        """An exclusive section named ``name`` among every process using this database.

        One coroutine at a time in this process (an asyncio lock), then one process at a time: PostgreSQL
        with a session advisory lock, SQLite with a lock on a file beside the database.
        """
        local = self._locks.setdefault(name, asyncio.Lock())
        async with local:
            if self.dialect == "postgresql":
                key = int.from_bytes(hashlib.sha256(f"chutes:{name}".encode()).digest()[:8], "big", signed=True)
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                    try:
                        yield
                    finally:
                        await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                        await conn.commit()
                return
            database = self.engine.url.database
            path = Path(f"{database}.{name}.lock") if database not in (None, "", ":memory:") else None
            async with _file_lock(path):
                yield

    async def close(self) -> None:
        await self.engine.dispose()
