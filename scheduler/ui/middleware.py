"""The dashboard's edge: the session cookie turned into the API's own authentication, CSRF checks, and the
security headers of every ``/ui`` answer.

A request that carries no ``Authorization`` header but the session cookie gets ``Authorization: Bearer <the
sealed key>`` added before the API sees it, so every route keeps its own dependencies (authentication,
ownership, admin checks) unchanged. The cookie is honoured only on the user API (``/v1/...`` less the
gateway and instance endpoints) and the dashboard's own (``/ui/api/...``). A write made with the cookie must
carry the session's CSRF token and, when the browser sends one, a same-origin ``Origin``. Plain ASGI (no
``BaseHTTPMiddleware``) so that Server-Sent Events and log streams pass through unbuffered.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from chutes.scheduler.ui.session import COOKIE, CSRF_HEADER, Keyring, master_secret

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
COOKIE_PATHS = ("/v1/", "/ui/api/")
NO_COOKIE_PATHS = ("/v1/internal/", "/v1/instances/")
SIGN_IN_PATH = "/ui/api/session"
SCOPE_SESSION = "chutes.ui_session"  # the cookie value, for routes that answer with the session's CSRF token

# The page loads only its own scripts, styles and images; nothing inline, no frames, no other origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
UI_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)


def cookie_applies(path: str) -> bool:
    return path.startswith(COOKIE_PATHS) and not path.startswith(NO_COOKIE_PATHS)


def session_cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except CookieError:
                continue
            if COOKIE in jar:
                return jar[COOKIE].value
    return None


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def same_origin(origin: str, host: str | None) -> bool:
    """The browser's ``Origin`` names this server (its ``Host``); "null" or another host does not."""
    parts = urlsplit(origin)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == (host or "").lower()


def clear_cookie_header(secure: bool) -> tuple[bytes, bytes]:
    attrs = f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    return b"set-cookie", attrs.encode()


class UIMiddleware:
    """Session cookies → API authentication, with CSRF checks; security headers on ``/ui``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if cookie_applies(path):
            headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
            cookie = session_cookie(headers)
            if cookie is not None and header(headers, b"authorization") is None:
                refused = await self._authenticate(scope, headers, cookie)
                if refused is not None:
                    status, detail, hint, clear = refused
                    await self._refuse(scope, send, status, detail, hint, clear)
                    return
        if path == "/ui" or path.startswith("/ui/"):
            send = self._with_headers(send, UI_HEADERS)
        elif SCOPE_SESSION in scope:
            send = self._with_headers(send, ((b"x-content-type-options", b"nosniff"),))
        await self.app(scope, receive, send)

    async def _authenticate(
        self, scope: Scope, headers: list[tuple[bytes, bytes]], cookie: str
    ) -> tuple[int, str, str, bool] | None:
        """Add the sealed key as the request's Authorization; or why the request is refused."""
        method: str = scope.get("method", "GET")
        if scope["path"] == SIGN_IN_PATH and method == "POST":
            return None  # signing in again: the old cookie, valid or not, plays no part
        keyring = await keyring_for(scope["app"])
        opened = keyring.open(cookie)
        if opened is None:
            return 401, "your dashboard session has expired or is not valid", "sign in again with your API key", True
        if method not in SAFE_METHODS:
            origin = header(headers, b"origin")
            if origin is not None and not same_origin(origin, header(headers, b"host")):
                return 403, "a request from another site cannot use your dashboard session", "use the dashboard", False
            if not keyring.csrf_ok(cookie, header(headers, CSRF_HEADER.encode())):
                return 403, "missing or wrong CSRF token", "reload the dashboard (it sends the token itself)", False
        scope["headers"] = [*headers, (b"authorization", f"Bearer {opened[0]}".encode())]
        scope[SCOPE_SESSION] = cookie
        return None

    @staticmethod
    def _with_headers(send: Send, extra: tuple[tuple[bytes, bytes], ...]) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        return wrapped

    async def _refuse(self, scope: Scope, send: Send, status: int, detail: str, hint: str, clear: bool) -> None:
        body = json.dumps({"detail": detail, "hint": hint}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *UI_HEADERS[1:2],
        ]
        if clear:
            headers.append(clear_cookie_header(scope.get("scheme") == "https"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def keyring_for(app: Any) -> Keyring:
    """The app's keyring, built once from the store's secret and kept with the app's services."""
    services = app.state.services
    keyring: Keyring | None = services.extras.get("ui_keyring")
    if keyring is None:
        async with services.store.session() as session:
            secret = await master_secret(session)
        keyring = Keyring(secret, services.config.ui_session_ttl_s)
        services.extras["ui_keyring"] = keyring
    return keyring
