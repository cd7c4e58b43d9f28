"""Chute secrets in the store: sealed values per (chute id, name), and the change counters Nomad catches up with."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.scheduler.store.base import now
from chutes.scheduler.store.models import User
from chutes.scheduler.store.secret_models import ChuteSecret, SecretSync


async def upsert(
    session: AsyncSession,
    *,
    owner_id: str,
    chute_id: str,
    chute_name: str,
    name: str,
    sealed: bytes,
    key_id: str,
) -> tuple[ChuteSecret, bool]:
    """Create or replace one secret; ``(row, created)``. Counts a change for the chute (see ``bump``)."""
    query = select(ChuteSecret).where(ChuteSecret.chute_id == chute_id, ChuteSecret.name == name)
    row = (await session.execute(query)).scalar_one_or_none()
    created = row is None
    if row is None:
        row = ChuteSecret(owner_id=owner_id, chute_id=chute_id, chute_name=chute_name, name=name, sealed=sealed,
                          key_id=key_id)  # fmt: skip
        session.add(row)
    else:
        row.sealed, row.key_id, row.updated_at = sealed, key_id, now()
    await bump(session, chute_id)
    await session.flush()
    return row, created


async def remove(session: AsyncSession, chute_id: str, name: str) -> bool:
    result = await session.execute(
        delete(ChuteSecret).where(ChuteSecret.chute_id == chute_id, ChuteSecret.name == name)
    )
    if getattr(result, "rowcount", 0):
        await bump(session, chute_id)
        return True
    return False


async def for_chute(session: AsyncSession, chute_id: str) -> list[ChuteSecret]:
    query = select(ChuteSecret).where(ChuteSecret.chute_id == chute_id).order_by(ChuteSecret.name)
    return list((await session.execute(query)).scalars())


async def names(session: AsyncSession, chute_id: str) -> tuple[str, ...]:
    """The chute's secret names, sorted as Python sorts (the job lists them so; a database collation may not)."""
    query = select(ChuteSecret.name).where(ChuteSecret.chute_id == chute_id)
    return tuple(sorted((await session.execute(query)).scalars()))


async def listing(
    session: AsyncSession, *, owner_id: str | None, chute_id: str | None = None
) -> list[tuple[ChuteSecret, str]]:
    """(secret, owner's username) rows: one owner's (``owner_id``) or everyone's (None), optionally one chute's."""
    query = select(ChuteSecret, User.username).join(User, User.id == ChuteSecret.owner_id)
    if owner_id is not None:
        query = query.where(ChuteSecret.owner_id == owner_id)
    if chute_id is not None:
        query = query.where(ChuteSecret.chute_id == chute_id)
    query = query.order_by(User.username, ChuteSecret.chute_name, ChuteSecret.name)
    return [(row, username) for row, username in (await session.execute(query)).all()]


async def key_ids(session: AsyncSession) -> dict[str, int]:
    """How many secrets each key id sealed (a start-up check that the configured key is the right one)."""
    query = select(ChuteSecret.key_id, func.count()).group_by(ChuteSecret.key_id)
    return {key_id: int(n) for key_id, n in (await session.execute(query)).all()}


async def one_sealed_with(session: AsyncSession, key_id: str) -> ChuteSecret | None:
    query = select(ChuteSecret).where(ChuteSecret.key_id == key_id).limit(1)
    return (await session.execute(query)).scalar_one_or_none()


async def purge_chute(session: AsyncSession, chute_id: str) -> None:
    await session.execute(delete(ChuteSecret).where(ChuteSecret.chute_id == chute_id))
    await session.execute(delete(SecretSync).where(SecretSync.chute_id == chute_id))


# -- what Nomad has seen ---------------------------------------------------------------------------------------


async def bump(session: AsyncSession, chute_id: str) -> int:
    """Count a change of the chute's secrets; the new generation."""
    row = await session.get(SecretSync, chute_id)
    if row is None:
        row = SecretSync(chute_id=chute_id, generation=0, synced_generation=0)
        session.add(row)
    row.generation += 1
    row.updated_at = now()
    await session.flush()
    return row.generation


async def generation(session: AsyncSession, chute_id: str) -> int:
    row = await session.get(SecretSync, chute_id)
    return row.generation if row is not None else 0


async def mark_synced(session: AsyncSession, chute_id: str, generation_written: int) -> None:
    """Nomad's Variables hold the secrets as of ``generation_written`` (never moves backwards)."""
    row = await session.get(SecretSync, chute_id)
    if row is not None and generation_written > row.synced_generation:
        row.synced_generation = generation_written
        row.updated_at = now()


async def pending(session: AsyncSession) -> list[str]:
    """Chutes whose secrets changed after Nomad last saw them."""
    query = select(SecretSync.chute_id).where(SecretSync.generation > SecretSync.synced_generation)
    return list((await session.execute(query)).scalars())
