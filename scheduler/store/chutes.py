"""Chutes, their versions (bundles) and shares."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.identity import chute_id as make_chute_id
from chutes.scheduler.store.models import Chute, ChuteVersion, Event, Instance, JobRun, Share, User
from chutes.scheduler.store.secrets import hash_secret
from chutes.scheduler.store.users import Principal


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def get_chute(session: AsyncSession, chute_id: str) -> Chute | None:
    return await session.get(Chute, chute_id)


async def get_by_route(session: AsyncSession, username: str, slug: str) -> Chute | None:
    query = select(Chute).where(Chute.username == username, Chute.slug == slug)
    return (await session.execute(query)).scalar_one_or_none()


async def get_by_host_label(session: AsyncSession, label: str) -> Chute | None:
    """The chute that owns the wildcard host label ``label`` (at most one does)."""
    return (await session.execute(select(Chute).where(Chute.host_label == label))).scalar_one_or_none()


async def is_shared_with(session: AsyncSession, chute_id: str, user_id: str) -> bool:
    return await session.get(Share, (chute_id, user_id)) is not None


async def can_see(session: AsyncSession, principal: Principal, chute: Chute) -> bool:
    """Owner, admin, anyone for a public chute, and the users it is shared with."""
    if principal.is_admin or chute.owner_id == principal.user_id or chute.public:
        return True
    return await is_shared_with(session, chute.id, principal.user_id)


async def resolve(session: AsyncSession, principal: Principal, ref: str) -> Chute | None:
    """The chute ``ref`` names for ``principal`` — a chute id, or the name or slug of one of their chutes.

    Returns None both when nothing matches and when the caller may not see the chute, so that another
    user's private chute is indistinguishable from a missing one.
    """
    candidates: list[Chute | None] = []
    if _is_uuid(ref):
        candidates.append(await session.get(Chute, ref))
    else:
        with contextlib.suppress(ValueError):  # not a valid chute name: try it as a slug only
            candidates.append(await session.get(Chute, make_chute_id(principal.username, ref)))
        candidates.append(await get_by_route(session, principal.username, ref))
    for chute in candidates:
        if chute is not None and await can_see(session, principal, chute):
            return chute
    return None


async def list_visible(session: AsyncSession, principal: Principal, *, everyone: bool = False) -> list[Chute]:
    """The caller's chutes and those shared with them (every chute for an admin asking for ``everyone``)."""
    query = select(Chute).order_by(Chute.username, Chute.name)
    if not (everyone and principal.is_admin):
        shared = select(Share.chute_id).where(Share.user_id == principal.user_id)
        query = query.where(or_(Chute.owner_id == principal.user_id, Chute.id.in_(shared)))
    return list((await session.execute(query)).scalars())


async def list_all(session: AsyncSession) -> list[Chute]:
    return list((await session.execute(select(Chute).order_by(Chute.id))).scalars())


async def get_version(session: AsyncSession, chute_id: str, sha256: str) -> ChuteVersion | None:
    return await session.get(ChuteVersion, (chute_id, sha256))


async def version_by_token(session: AsyncSession, token: str) -> ChuteVersion | None:
    query = select(ChuteVersion).where(ChuteVersion.token_hash == hash_secret(token))
    return (await session.execute(query)).scalar_one_or_none()


async def put_version(
    session: AsyncSession, chute_id: str, sha256: str, bundle: bytes, manifest: dict[str, Any], token: str
) -> ChuteVersion:
    """Store a bundle as a version of the chute (idempotent: the same bytes again update the manifest)."""
    row = await get_version(session, chute_id, sha256)
    if row is None:
        row = ChuteVersion(
            chute_id=chute_id, sha256=sha256, size=len(bundle), bundle=bundle, manifest=manifest,
            token_hash=hash_secret(token),
        )  # fmt: skip
        session.add(row)
    else:
        row.manifest = manifest
    await session.flush()
    return row


async def prune_versions(session: AsyncSession, chute_id: str, keep: int, current: str) -> int:
    """Delete all but the ``keep`` newest versions (never the current one); returns how many went."""
    query = select(ChuteVersion.sha256, ChuteVersion.created_at).where(ChuteVersion.chute_id == chute_id)
    rows = sorted((await session.execute(query)).all(), key=lambda r: r.created_at, reverse=True)
    doomed = [r.sha256 for r in rows[keep:] if r.sha256 != current]
    if doomed:
        await session.execute(
            delete(ChuteVersion).where(ChuteVersion.chute_id == chute_id, ChuteVersion.sha256.in_(doomed))
        )
    return len(doomed)


async def share(session: AsyncSession, chute: Chute, user: User, *, adopted: bool = False) -> bool:
    """Share ``chute`` with ``user``; False when it already was. ``adopted``: the user deployed it for its
    owner on a dev stack and manages it (``manages``); an existing share becomes such a one."""
    existing = await session.get(Share, (chute.id, user.id))
    if existing is not None:
        if adopted and not existing.adopted:
            existing.adopted = True
            await session.flush()
        return False
    session.add(Share(chute_id=chute.id, user_id=user.id, adopted=adopted))
    await session.flush()
    return True


async def manages(session: AsyncSession, principal: Principal, chute: Chute) -> bool:
    """Whether ``principal`` may watch and change ``chute``: its owner, an admin, or (dev stacks) the user who
    deployed it for an adopted owner. Sharing alone grants calling, not this."""
    if principal.is_admin or chute.owner_id == principal.user_id:
        return True
    found = await session.get(Share, (chute.id, principal.user_id))
    return found is not None and bool(found.adopted)


async def unshare(session: AsyncSession, chute: Chute, user: User) -> bool:
    result = await session.execute(delete(Share).where(Share.chute_id == chute.id, Share.user_id == user.id))
    return bool(getattr(result, "rowcount", 0))


async def shared_with(session: AsyncSession, chute_id: str) -> list[str]:
    query = (
        select(User.username)
        .join(Share, Share.user_id == User.id)
        .where(Share.chute_id == chute_id)
        .order_by(User.username)
    )
    return list((await session.execute(query)).scalars())


async def purge(session: AsyncSession, chute_id: str) -> None:
    """Delete a chute and everything recorded about it (metering keeps its own ledger of GPU time)."""
    await session.execute(delete(JobRun).where(JobRun.chute_id == chute_id))
    await session.execute(delete(Share).where(Share.chute_id == chute_id))
    await session.execute(delete(ChuteVersion).where(ChuteVersion.chute_id == chute_id))
    await session.execute(delete(Instance).where(Instance.chute_id == chute_id))
    await session.execute(delete(Event).where(Event.chute_id == chute_id))
    await session.execute(delete(Chute).where(Chute.id == chute_id))
