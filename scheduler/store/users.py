"""Users and API keys: create, authenticate, list (without secrets), revoke, bootstrap the admin."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.identity import validate_username
from chutes.scheduler.store.base import now
from chutes.scheduler.store.models import ROLES, ApiKey, User
from chutes.scheduler.store.secrets import hash_secret, key_prefix, looks_like_api_key, new_api_key


class UserExistsError(ValueError):
    """The username is taken."""


class RoleError(ValueError):
    """A key role that does not exist or that the user may not hold."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user and the role of the key they used."""

    user_id: str
    username: str
    user_is_admin: bool
    key_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_gateway(self) -> bool:
        return self.role in ("gateway", "admin")


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_name(session: AsyncSession, username: str) -> User | None:
    return (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()


async def create_user(session: AsyncSession, username: str, *, is_admin: bool = False) -> User:
    validate_username(username)
    user = User(username=username, is_admin=is_admin)
    try:
        async with session.begin_nested():
            session.add(user)
    except IntegrityError:
        raise UserExistsError(f"user {username!r} already exists") from None
    return user


def _check_role(user: User, role: str) -> None:
    if role not in ROLES:
        raise RoleError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if role != "user" and not user.is_admin:
        raise RoleError(f"only an admin user can hold a key with role {role!r}")


async def create_key(
    session: AsyncSession, user: User, *, name: str = "", role: str = "user", secret: str | None = None
) -> tuple[ApiKey, str]:
    """A new key for ``user``; returns the row and the plaintext key (shown once, never stored)."""
    _check_role(user, role)
    plaintext = secret or new_api_key()
    row = ApiKey(user_id=user.id, name=name, prefix=key_prefix(plaintext), key_hash=hash_secret(plaintext), role=role)
    session.add(row)
    await session.flush()
    return row, plaintext


async def authenticate(session: AsyncSession, plaintext: str) -> Principal | None:
    """The principal of a valid, unrevoked key, else None."""
    if not looks_like_api_key(plaintext):
        return None
    query = select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.key_hash == hash_secret(plaintext))
    row = (await session.execute(query)).first()
    if row is None:
        return None
    key, user = row
    if key.revoked_at is not None:
        return None
    return Principal(user_id=user.id, username=user.username, user_is_admin=user.is_admin, key_id=key.id, role=key.role)


async def list_keys(session: AsyncSession, user_id: str) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at, ApiKey.id)
    return list((await session.execute(query)).scalars())


async def revoke_key(session: AsyncSession, user_id: str, key_id: str) -> ApiKey | None:
    """Revoke one of ``user_id``'s keys; None when it is not theirs. Revoking twice is a no-op."""
    key = await session.get(ApiKey, key_id)
    if key is None or key.user_id != user_id:
        return None
    if key.revoked_at is None:
        key.revoked_at = now()
    return key


async def ensure_admin(session: AsyncSession, username: str, key: str | None = None) -> tuple[User, str | None]:
    """Make sure an admin user exists, and that ``key`` (if given) is one of its admin keys.

    Returns the user and the plaintext of a newly created key (None when ``key`` was given or already there).
    Used for the ``CHUTES_ADMIN_KEY`` bootstrap at start-up and by ``chutes-scheduler create-admin``.
    """
    if key is not None and not looks_like_api_key(key):
        raise ValueError("CHUTES_ADMIN_KEY must look like an API key: 'cnk_' followed by 43 url-safe characters")
    user = await get_user_by_name(session, username)
    if user is None:
        try:
            user = await create_user(session, username, is_admin=True)
        except UserExistsError:  # created concurrently by another scheduler
            user = await get_user_by_name(session, username)
            assert user is not None
    elif not user.is_admin:
        user.is_admin = True
    if key is None:
        _, plaintext = await create_key(session, user, name="admin", role="admin")
        return user, plaintext
    existing = (await session.execute(select(ApiKey).where(ApiKey.key_hash == hash_secret(key)))).scalar_one_or_none()
    if existing is None:
        try:
            async with session.begin_nested():
                await create_key(session, user, name="bootstrap", role="admin", secret=key)
        except IntegrityError:
            pass  # another scheduler inserted the same bootstrap key
    elif existing.user_id != user.id or existing.role != "admin":
        raise ValueError("CHUTES_ADMIN_KEY is already in use by another user or role")
    return user, None
