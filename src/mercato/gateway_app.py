"""The gateway's companion process (`mercato serve gateway`): what no single service can answer.

nginx (`mercato.gateway.render_nginx`) sends each service's paths to that service's replicas,
but DESIGN §2 also promises answers about the whole installation, the same as `mercato run`
gives: one OpenAPI document holding every operation, `/docs` and `/redoc` on it, and a `/ready`
that says whether every service can answer. nginx sends exactly those paths
(`mercato.gateway.GATEWAY_PATHS`) here.

- `/openapi.json` is the embedded app's own document (`mercato.app.create_app(...).openapi()`),
  built once, on first request, from the same code `mercato run` serves, without starting
  anything: no database, broker or Redis is contacted to build it.
- `/ready` asks every replica's own `/ready` directly and concurrently, each with a short
  timeout: 200 when every service has at least one ready replica, else 503, with the answer of
  each replica. The replicas come from `MERCATO_GATEWAY_UPSTREAMS` (JSON
  `{"service": ["host:port", ...]}`), set by `mercato dev-cluster` and `deploy/compose.yaml`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic_settings import BaseSettings, SettingsConfigDict

from mercato import __version__
from mercato.console import console_router
from mercato.gateway import ROUTES
from mercato.platform.asyncapi import add_asyncapi, consumed_types
from mercato.platform.browser import add_docs, protect
from mercato.platform.http_errors import install_error_handlers
from mercato.platform.net import trust_forwarded_headers
from mercato.platform.settings import Settings, get_settings

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
TITLE = "Mercato"

DocumentBuilder = Callable[[], dict[str, Any]]


class GatewaySettings(BaseSettings):
    """The companion's configuration (`MERCATO_GATEWAY_*` variables or `.env`)."""

    model_config = SettingsConfigDict(
        env_prefix="MERCATO_GATEWAY_", env_file=".env", extra="ignore", env_file_encoding="utf-8"
    )

    # service -> ["host:port", ...] of its replicas (JSON in MERCATO_GATEWAY_UPSTREAMS).
    upstreams: dict[str, list[str]] = {}
    # Seconds one replica's /ready may take before it counts as unavailable.
    ready_timeout: float = 2.0


def embedded_document(settings: Settings | None = None) -> dict[str, Any]:
    """`mercato run`'s OpenAPI document, from the same code, without starting anything.

    The embedded app is only built: its lifespan (migrations, connections, loops) never runs,
    and building it opens no connection (engines and clients connect on first use). Built
    with the services' settings (the process's own by default), so it says what they serve.
    """
    from mercato.app import create_app  # the services' code; only the document needs it

    return create_app(settings or get_settings()).openapi()


def _consumed_types() -> dict[str, list[str]]:
    from mercato.app import load_modules  # the services' code; only the documents need it

    return consumed_types(load_modules())


class _CachedDocument:
    """The document, serialized once; built off the event loop so `/ready` keeps answering."""

    def __init__(self, build: DocumentBuilder) -> None:
        self._build = build
        self._body: bytes | None = None
        self._lock = asyncio.Lock()

    async def body(self) -> bytes:
        if self._body is None:
            async with self._lock:
                if self._body is None:
                    document = await asyncio.to_thread(self._build)
                    self._body = json.dumps(document, separators=(",", ":")).encode()
        return self._body


def create_gateway_app(
    upstreams: Mapping[str, Sequence[str]] | None = None,
    *,
    ready_timeout: float | None = None,
    document: DocumentBuilder = embedded_document,
    platform_settings: Settings | None = None,
) -> FastAPI:
    """The companion app; `upstreams` and `ready_timeout` default to `GatewaySettings`, the
    CORS origins and trusted proxies to the platform's settings (read now by default)."""
    settings = GatewaySettings()
    common = platform_settings or Settings()
    chosen = dict(settings.upstreams if upstreams is None else upstreams)
    timeout = settings.ready_timeout if ready_timeout is None else ready_timeout
    # Every service of the route table must be ready, named in the config or not.
    replicas = {service: list(chosen.get(service, ())) for service in ROUTES}
    replicas.update({s: list(a) for s, a in chosen.items() if s not in replicas})
    cached = _CachedDocument(document)
    # Its own routes stay out of any document: the document served is the embedded one.
    app = FastAPI(
        title=f"{TITLE} gateway",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    # The same browser rules and forwarded addresses as every service (mercato.platform.web).
    protect(app, common.cors_origins)
    trust_forwarded_headers(app, common.trusted_proxies)

    @app.get(OPENAPI_URL)
    async def openapi() -> Response:
        """One OpenAPI document with every service's operations."""
        return Response(await cached.body(), media_type="application/json")

    add_asyncapi(app, _consumed_types, common)

    # Swagger UI (with its OAuth2 redirect page) and ReDoc on the whole document, the pages
    # every service serves, with the same Content-Security-Policy.
    add_docs(app, title=TITLE, openapi_url=OPENAPI_URL, docs_url=DOCS_URL)

    # The web console: its pages call the API through nginx, the same origin.
    app.include_router(console_router())

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: this process answers (nginx answers the public `/health` itself)."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """200 when every service has at least one ready replica, else 503; each replica's
        answer under `services.<service>.replicas`."""
        body = await readiness(replicas, timeout)
        return JSONResponse(body, 200 if body["status"] == "ok" else 503)

    return app


async def readiness(replicas: Mapping[str, Sequence[str]], within: float) -> dict[str, Any]:
    """Ask every replica's `/ready` at once, each answering `within` seconds; the gateway's
    `/ready` body."""
    pairs = [(service, address) for service, addresses in replicas.items() for address in addresses]
    async with httpx.AsyncClient(timeout=within) as client:
        answers = await asyncio.gather(*(_probe(client, a, within) for _, a in pairs))
    services: dict[str, dict[str, Any]] = {}
    for service in replicas:
        services[service] = {"status": "unavailable", "replicas": {}}
    for (service, address), answer in zip(pairs, answers, strict=True):
        services[service]["replicas"][address] = answer
        if answer == "ok":
            services[service]["status"] = "ok"
    ok = all(entry["status"] == "ok" for entry in services.values())
    return {"status": "ok" if ok else "unavailable", "services": services}


async def _probe(client: httpx.AsyncClient, address: str, within: float) -> str:
    """One replica's readiness: "ok" or "unavailable: <why>"."""
    try:
        # The whole exchange is bounded, not each phase: a replica that trickles bytes is as
        # unready as one that never answers.
        async with asyncio.timeout(within):
            answer = await client.get(f"http://{address}/ready")
    except TimeoutError:
        return f"unavailable: no answer within {within:g} s"
    except httpx.HTTPError as exc:
        return f"unavailable: {type(exc).__name__}"
    try:
        body = answer.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return f"unavailable: HTTP {answer.status_code}, not a readiness answer"
    if answer.status_code == 200 and body.get("status") == "ok":
        return "ok"
    checks = body.get("checks")
    failing = (
        [name for name, result in checks.items() if result != "ok"]
        if isinstance(checks, dict)
        else []
    )
    why = f" ({', '.join(sorted(failing))})" if failing else ""
    return f"unavailable: HTTP {answer.status_code}{why}"
