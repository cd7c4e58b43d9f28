"""Dashboard sessions: a signed-in browser holds the API key it signed in with, sealed in an HttpOnly cookie.

The cookie is a Fernet token (AES-128-CBC + HMAC-SHA256, with its issue time) over the key, so it expires
on its own after ``ui_session_ttl_s`` and is useless to anyone who reads it from disk without the store's
secret. Every request re-authenticates the key it carries, so revoking the key ends its sessions at once.
The scheduler needs the plaintext key (not just who the user is) because the dashboard's "try a cord" form
calls the gateway as that user, exactly as the CLI would.

Writes made with the cookie need a CSRF token (``X-Chutes-CSRF``): an HMAC of the cookie, handed to the page
by ``/ui/api/session``. The cookie is also ``SameSite=Strict``; the token is the defence that does not depend
on the browser. Both secrets derive from one random value kept in the store, so every scheduler sharing the
store honours the sessions of the others.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.ext.asyncio import AsyncSession

from chutes.scheduler.store.secrets import looks_like_api_key, stored_secret

COOKIE = "chutes_session"
CSRF_HEADER = "x-chutes-csrf"
SECRET_SETTING = "ui_session_secret"  # noqa: S105 - a settings key, not a secret
MAX_TOKEN_CHARS = 1024  # a sealed key is ~200 characters; anything far longer is not ours


@dataclass(frozen=True, slots=True)
class Sealed:
    """A session: the cookie value, its CSRF token and when it expires (UNIX seconds)."""

    cookie: str
    csrf: str
    expires_at: float


class Keyring:
    """Seals API keys into session cookies and opens them again (pure: no I/O, the clock is an argument)."""

    def __init__(self, master_secret: str, ttl_s: int) -> None:
        master = master_secret.encode()
        enc = hmac.new(master, b"chutes ui session: cookie", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(enc))
        self._csrf_key = hmac.new(master, b"chutes ui session: csrf", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def seal(self, api_key: str, now: float | None = None) -> Sealed:
        """A new session for ``api_key``."""
        issued = int(time.time() if now is None else now)
        payload = json.dumps({"k": api_key}, separators=(",", ":")).encode()
        cookie = self._fernet.encrypt_at_time(payload, issued).decode()
        return Sealed(cookie=cookie, csrf=self.csrf(cookie), expires_at=float(issued + self.ttl_s))

    def open(self, cookie: str, now: float | None = None) -> tuple[str, float] | None:
        """(the API key, when the session expires), or None for a forged, damaged or expired cookie."""
        if not cookie or len(cookie) > MAX_TOKEN_CHARS:
            return None
        current = int(time.time() if now is None else now)
        try:
            raw = cookie.encode("ascii")
            payload = self._fernet.decrypt_at_time(raw, self.ttl_s, current)
            issued = self._fernet.extract_timestamp(raw)
            key = json.loads(payload)["k"]
        except (InvalidToken, UnicodeEncodeError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(key, str) or not looks_like_api_key(key):
            return None
        return key, float(issued + self.ttl_s)

    def csrf(self, cookie: str) -> str:
        """The CSRF token that goes with a session cookie."""
        digest = hmac.new(self._csrf_key, cookie.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def csrf_ok(self, cookie: str, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf(cookie), presented or "")


async def master_secret(session: AsyncSession) -> str:
    """The store-wide session secret, created on first use (race-safe across schedulers)."""
    return await stored_secret(session, SECRET_SETTING)
