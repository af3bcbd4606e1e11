"""The web console at `/console`: static pages that operate Mercato through its public HTTP API.

The console is plain HTML, CSS and JavaScript modules shipped in this package (`static/`); it
reads and acts only through the same-origin API an admin may call, so it works the same in front
of `mercato run` and of a cluster (served there by the gateway's companion). Every asset is served
from here: nothing is loaded from another host, so it works on a machine with no internet.

The files are read once, when the router is built, and answered from memory (gzip-compressed
when the browser accepts it) with an `ETag`, so a reload costs a few 304s. The page's
Content-Security-Policy allows exactly this origin's scripts, styles, images and API calls: no
inline script or style, no framing, no `<base>`.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from mercato.platform.http_errors import problem

PREFIX = "/console"
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    """One file of the console, as answered."""

    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file under `static/`, by its path relative to it (`pages/orders.js`)."""
    assets: dict[str, Asset] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            name = f"{prefix}{entry.name}"
            if entry.is_dir():
                walk(entry, f"{name}/")
                continue
            suffix = entry.name[entry.name.rfind(".") :]
            if suffix not in _TYPES:
                continue  # only what the page loads; never a stray file of the package
            body = entry.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:32]
            # mtime=0: the same bytes on every start and replica, so the ETag stays valid.
            assets[name] = Asset(body, gzip.compress(body, mtime=0), _TYPES[suffix], f'"{digest}"')

    walk(files("mercato.console") / "static", "")
    return assets


def _answer(asset: Asset, request: Request, *, page: bool) -> Response:
    # no-cache: the browser revalidates each load (a 304 when unchanged), so an upgrade shows at
    # once without versioned file names.
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if page:
        headers["Content-Security-Policy"] = POLICY
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=asset.media_type, headers=headers)


def console_router() -> APIRouter:
    """The routes of `/console` (left out of the OpenAPI document: they are pages, not API)."""
    assets = load_assets()
    index = assets["index.html"]
    router = APIRouter(include_in_schema=False)

    @router.get(PREFIX)
    async def console_page(request: Request) -> Response:
        """The console's one page; it shows each part by the URL's fragment."""
        return _answer(index, request, page=True)

    @router.get(f"{PREFIX}/")
    async def console_slash() -> Response:
        """`/console/` is the page too, at its one address (its assets are named absolutely)."""
        return RedirectResponse(PREFIX, status_code=308)

    @router.get(PREFIX + "/{name:path}")
    async def console_asset(name: str, request: Request) -> Response:
        """A script, style sheet or image of the console."""
        asset = assets.get(name)
        if asset is None:
            return problem(404, f"the console has no file {name[:100]!r}")
        return _answer(asset, request, page=name.endswith(".html"))

    return router
