"""Fixtures for the scheduler's tests: a migrated store on SQLite and, where reachable, PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chutes.scheduler.store import Store
from tests.scheduler.server import RunningScheduler, make_config, serve

PG_URL = os.environ.get("CHUTES_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
_pg_reason: str | None = None
_pg_checked = False


async def _pg_reachable() -> str | None:
    """None when PostgreSQL answers at PG_URL, else the reason it does not."""
    global _pg_checked, _pg_reason
    if _pg_checked:
        return _pg_reason
    _pg_checked = True
    try:
        import asyncpg

        dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncio.wait_for(asyncpg.connect(dsn), timeout=3)
        await conn.close()
        _pg_reason = None
    except Exception as exc:
        _pg_reason = f"PostgreSQL not reachable at {PG_URL}: {exc!r}"
    return _pg_reason


async def _pg_execute(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def open_store(backend: str, tmp_path: Path) -> tuple[Store, str | None]:
    """A migrated store; for PostgreSQL in a fresh schema (returned, to drop afterwards)."""
    if backend == "sqlite":
        store = Store(f"sqlite+aiosqlite:///{tmp_path / 'scheduler.db'}")
        await store.migrate()
        return store, None
    reason = await _pg_reachable()
    if reason is not None:
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    await _pg_execute(f'CREATE SCHEMA "{schema}"')
    store = Store(PG_URL, schema=schema)
    await store.migrate()
    return store, schema


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store, schema = await open_store(request.param, tmp_path)
    try:
        yield store
    finally:
        await store.close()
        if schema is not None:
            await _pg_execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store, _ = await open_store("sqlite", tmp_path)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningScheduler]:
    """A scheduler (no loops, no Nomad) on a loopback port, with an admin key."""
    async with serve(make_config(tmp_path)) as running:
        yield running
