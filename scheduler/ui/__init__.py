"""The web dashboard, served by the scheduler under ``/ui`` (same origin as the API).

- ``assets``: the page (static/index.html, app.js, app.css, icon.svg; no framework, no CDN).
- ``session`` + ``middleware``: sign-in with an API key kept in a sealed HttpOnly cookie; the cookie stands
  in for ``Authorization`` on the user API, with CSRF checks on writes; strict security headers on ``/ui``.
- ``routes``: ``/ui/api/...``, what the page needs beyond the ``/v1`` API (sign-in, per-node placement
  verdicts, GPU holders, running costs, the "try a cord" call through the gateway).

``install(app)`` is all the scheduler's app factory calls.
"""

from __future__ import annotations

from fastapi import FastAPI

from chutes.scheduler.ui.assets import asset_router
from chutes.scheduler.ui.middleware import UIMiddleware
from chutes.scheduler.ui.routes import router


def install(app: FastAPI) -> None:
    """Serve the dashboard on ``app``: its files, its API and the session middleware."""
    app.include_router(router)
    app.include_router(asset_router())
    app.add_middleware(UIMiddleware)
