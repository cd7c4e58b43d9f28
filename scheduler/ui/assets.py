"""The dashboard's files: one HTML page, its script, style sheet and icon, shipped as package data.

Served from memory (read once), with an ETag and ``no-cache`` (the browser revalidates and gets a 304, so a
new scheduler version is picked up at once), gzip-compressed when the browser accepts it. Only the files
found in ``static/`` at start-up can be served: the name in the URL is looked up, never joined to a path.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from chutes.scheduler.api.errors import APIError

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of ``static/`` with a known type, by name."""
    found: dict[str, Asset] = {}
    for entry in resources.files("chutes.scheduler.ui").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        found[entry.name] = Asset(body, gzip.compress(body, 9, mtime=0), TYPES[suffix], etag)
    return found


def asset_response(request: Request, asset: Asset) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.content_type, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def asset_router() -> APIRouter:
    assets = load_assets()
    router = APIRouter(include_in_schema=False)

    @router.get("/ui")
    async def ui_root() -> Response:
        return RedirectResponse("/ui/", status_code=308)

    @router.get("/ui/")
    async def index(request: Request) -> Response:
        """The page; every view of it is a fragment (#/chutes, #/nodes, ...) of this one address."""
        return asset_response(request, assets["index.html"])

    @router.get("/ui/static/{name}")
    async def static(name: str, request: Request) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise APIError(404, f"no dashboard file {name!r}", "open /ui/")
        return asset_response(request, asset)

    return router
