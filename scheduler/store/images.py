"""Images: rows keyed by their build context's sha256, and the per-build credential of the build task."""

from __future__ import annotations

import base64
import hashlib
import hmac

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.scheduler.store.base import now
from chutes.scheduler.store.image_models import ImageRow

BUILD_TOKEN_PREFIX = "cbt_"  # noqa: S105 - a prefix, not a secret
ACTIVE = ("queued", "building")
FINAL = ("ready", "failed")


def build_token(store_secret: str, image_id: str, attempt: int) -> str:
    """The credential of one build attempt: HMAC-SHA256(store secret, "build:<image id>:<attempt>")."""
    digest = hmac.new(store_secret.encode(), f"build:{image_id}:{attempt}".encode(), hashlib.sha256).digest()
    return BUILD_TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def is_build_token(store_secret: str, image_id: str, attempt: int, token: str) -> bool:
    return hmac.compare_digest(build_token(store_secret, image_id, attempt), token)


async def get(session: AsyncSession, image_id: str) -> ImageRow | None:
    return await session.get(ImageRow, image_id)


async def list_images(session: AsyncSession, owner_id: str | None = None) -> list[ImageRow]:
    """Every image (``owner_id``: that user's), newest first."""
    query = select(ImageRow)
    if owner_id is not None:
        query = query.where(ImageRow.owner_id == owner_id)
    return list((await session.execute(query.order_by(ImageRow.created_at.desc()))).scalars())


async def list_active(session: AsyncSession) -> list[ImageRow]:
    query = select(ImageRow).where(ImageRow.status.in_(ACTIVE))
    return list((await session.execute(query)).scalars())


async def active_count(session: AsyncSession, owner_id: str) -> int:
    query = select(func.count()).select_from(ImageRow).where(ImageRow.owner_id == owner_id, ImageRow.status.in_(ACTIVE))
    return int((await session.execute(query)).scalar_one())


def set_status(row: ImageRow, status: str, *, error: str | None = None) -> None:
    row.status = status
    row.updated_at = now()
    if error is not None:
        row.error = error
    if status == "building" and row.started_at is None:
        row.started_at = now()
    if status in FINAL:
        row.finished_at = now()
