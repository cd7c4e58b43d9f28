"""Deployment events of a chute, in order (the id is monotonic)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.scheduler.store.models import Event


async def add_event(
    session: AsyncSession,
    chute_id: str,
    kind: str,
    message: str,
    *,
    version: str | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    row = Event(chute_id=chute_id, kind=kind, message=message, version=version, data=data or {})
    session.add(row)
    await session.flush()
    return row


async def list_events(session: AsyncSession, chute_id: str, *, after: int = 0, limit: int = 1000) -> list[Event]:
    query = select(Event).where(Event.chute_id == chute_id, Event.id > after).order_by(Event.id).limit(limit)
    return list((await session.execute(query)).scalars())


async def last_event(session: AsyncSession, chute_id: str, kind: str | None = None) -> Event | None:
    query = select(Event).where(Event.chute_id == chute_id)
    if kind is not None:
        query = query.where(Event.kind == kind)
    return (await session.execute(query.order_by(Event.id.desc()).limit(1))).scalar_one_or_none()
