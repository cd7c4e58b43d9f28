"""Secrets the store hands out: API keys, instance tokens and invoke secrets. Only hashes are stored for keys.

API keys are ``cnk_`` + 43 url-safe characters (256 random bits). An instance token is derived from a
store-wide secret and the chute version (HMAC), so that any scheduler of the same store can render a job
for that version again (e.g. the reconciler recreating a lost job) while the database keeps only its hash.
A run token is derived the same way from the job run's id: it lets that one run upload its outputs, and
only until the run has finished (the scheduler checks the run's state, so nothing needs revoking).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.scheduler.store.models import Setting

API_KEY_PREFIX = "cnk_"
INSTANCE_TOKEN_PREFIX = "cit_"  # noqa: S105 - a prefix, not a secret
RUN_TOKEN_PREFIX = "cjt_"  # noqa: S105 - a prefix, not a secret
KEY_DISPLAY_CHARS = 12  # "cnk_" + 8: enough to tell keys apart in a listing, useless to an attacker
TOKEN_SECRET_SETTING = "instance_token_secret"  # noqa: S105 - a settings key


def hash_secret(value: str) -> str:
    """sha256 hex digest of a key or token (keys are 256-bit random, so a fast hash is enough)."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def key_prefix(key: str) -> str:
    return key[:KEY_DISPLAY_CHARS]


def looks_like_api_key(value: str) -> bool:
    return value.startswith(API_KEY_PREFIX) and len(value) == len(API_KEY_PREFIX) + 43


def new_invoke_secret() -> str:
    return secrets.token_hex(32)


def instance_token(store_secret: str, chute_id: str, version: str) -> str:
    """The instance token of one chute version: HMAC-SHA256(store secret, "<chute_id>:<version>")."""
    digest = hmac.new(store_secret.encode(), f"{chute_id}:{version}".encode(), hashlib.sha256).digest()
    return INSTANCE_TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def run_token(store_secret: str, run_id: str) -> str:
    """The token of one job run: HMAC-SHA256(store secret, "run:<run_id>")."""
    digest = hmac.new(store_secret.encode(), f"run:{run_id}".encode(), hashlib.sha256).digest()
    return RUN_TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def is_run_token(store_secret: str, run_id: str, token: str) -> bool:
    return hmac.compare_digest(token.encode(), run_token(store_secret, run_id).encode())


async def stored_secret(session: AsyncSession, setting: str) -> str:
    """The store-wide random secret kept under the settings key ``setting``, created on first use (race-safe
    across schedulers)."""
    row = await session.get(Setting, setting)
    if row is not None:
        return row.value
    try:
        async with session.begin_nested():
            session.add(Setting(key=setting, value=secrets.token_hex(32)))
    except IntegrityError:
        pass  # another scheduler created it first
    value = (await session.execute(select(Setting.value).where(Setting.key == setting))).scalar_one()
    return value


async def token_secret(session: AsyncSession) -> str:
    """The store-wide instance-token secret, created on first use (race-safe across schedulers)."""
    return await stored_secret(session, TOKEN_SECRET_SETTING)
