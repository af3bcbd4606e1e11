"""What browsers are told: CORS (`MERCATO_CORS_ORIGINS`), security headers and the docs pages'
Content-Security-Policy.

Every answer says `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`, and,
unless it brings its own, `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`
(a JSON answer opened as a page runs nothing and cannot be framed). The HTML pages, Swagger UI
and ReDoc, bring a policy that allows exactly what they load, all of it from this origin: their
scripts, styles and favicon (served under `/docs/assets/` from the `fastapi-offline` package, so
the pages work with no internet), their inline bootstrap script by its hash (computed here from
the page built once at start, never from an answer), the document, and ReDoc's search worker
from a blob.

CORS is off unless origins are listed: a browser on another origin then gets no
`Access-Control-Allow-Origin` and may not read any answer. Tokens travel in `Authorization`,
never in cookies, so credentials are not allowed cross-origin either way.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercato.platform.errors import NotFound

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
# The docs pages' scripts, styles and favicon: installed with the `fastapi-offline` package (the
# Swagger UI and ReDoc bundles, a dependency rather than files copied into this repository) and
# served from this origin. A test reads the pages and checks every asset they name is allowed.
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# Directives every page shares: nothing else, no <base>, no framing, forms only to this origin.
_PAGE_BASE = "default-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "X-Correlation-ID",
    "X-Request-ID",
)
CORS_EXPOSED_HEADERS = ("Location", "Retry-After", "X-Correlation-ID", "ETag")

_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL | re.I)


class SecurityHeaders:
    """Pure ASGI: the security headers on every HTTP answer (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"server"
                ]
                present = {name.lower() for name, _ in headers}
                headers += [pair for pair in _SECURITY_HEADERS if pair[0] not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", API_POLICY.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def protect(app: FastAPI, cors_origins: Sequence[str]) -> None:
    """Install CORS (when origins are listed) and the security headers on `app`; call after
    its other middleware, so both wrap them and their error answers."""
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=list(CORS_METHODS),
            allow_headers=list(CORS_REQUEST_HEADERS),
            expose_headers=list(CORS_EXPOSED_HEADERS),
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)


def script_hashes(html: str) -> list[str]:
    """CSP sources for each inline script of `html` (`'sha256-…'`)."""
    hashes = []
    for body in _INLINE_SCRIPT.findall(html):
        digest = hashlib.sha256(body.encode()).digest()
        hashes.append(f"'sha256-{base64.b64encode(digest).decode()}'")
    return hashes


def swagger_policy(html: str) -> str:
    """The policy of the Swagger UI page `html`: everything from this origin (styles inline
    too: Swagger UI sets them on its elements)."""
    scripts = " ".join(["'self'", *script_hashes(html)])
    return (
        f"{_PAGE_BASE}; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'"
    )


def redoc_policy(html: str) -> str:
    """The policy of the ReDoc page `html` (its search runs in a worker made from a blob; its
    styles are injected at run time; fonts, if any, only from this origin)."""
    scripts = " ".join(["'self'", *script_hashes(html)])
    return (
        f"{_PAGE_BASE}; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
        "font-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src blob:"
    )


def redirect_policy(html: str) -> str:
    """The policy of Swagger UI's OAuth2 redirect page: its one inline script."""
    return f"{_PAGE_BASE}; script-src {' '.join(script_hashes(html))}"


def _serving(body: bytes, policy: str) -> Callable[[], Awaitable[HTMLResponse]]:
    # A new response each time: middleware may add to an answer's header list in place.
    async def show() -> HTMLResponse:
        return HTMLResponse(body, headers={"Content-Security-Policy": policy})

    return show


def add_docs(
    app: FastAPI,
    *,
    title: str,
    openapi_url: str = "/openapi.json",
    docs_url: str = "/docs",
    redoc_url: str = "/redoc",
) -> None:
    """Serve Swagger UI at `docs_url` (with its OAuth2 redirect page) and ReDoc at `redoc_url`,
    as FastAPI's own pages are, each with its Content-Security-Policy. Pages and policies are
    built once, here, so a policy only ever allows this code's own inline scripts."""
    redirect_url = f"{docs_url}/oauth2-redirect"
    assets = f"{docs_url}/assets"
    swagger = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} - Swagger UI",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon.png",
        oauth2_redirect_url=redirect_url,
        init_oauth=app.swagger_ui_init_oauth,
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    redirect = get_swagger_ui_oauth2_redirect_html()
    redoc = get_redoc_html(
        openapi_url=openapi_url,
        title=f"{title} - ReDoc",
        redoc_js_url=f"{assets}/redoc.standalone.js",
        redoc_favicon_url=f"{assets}/favicon.png",
        with_google_fonts=False,
    )
    pages = {
        docs_url: (swagger, swagger_policy),
        redirect_url: (redirect, redirect_policy),
        redoc_url: (redoc, redoc_policy),
    }
    for path, (page, policy_of) in pages.items():
        body = bytes(page.body)
        show = _serving(body, policy_of(body.decode()))
        show.__doc__ = f"The page at {path}."
        app.add_api_route(path, show, methods=["GET"], include_in_schema=False)
    add_docs_assets(app, assets)


def add_docs_assets(app: FastAPI, prefix: str = "/docs/assets") -> None:
    """Serve the docs pages' scripts, styles and favicon at `prefix`/<name> (a fixed list: no
    path from a request ever reaches the file system)."""

    async def asset(name: str) -> Response:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound(f"no asset {name[:80]!r}")
        # The bundles change only with the installed package: browsers may keep them a day.
        return FileResponse(
            ASSETS_DIR / name,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.add_api_route(f"{prefix}/{{name}}", asset, methods=["GET"], include_in_schema=False)
