"""`/metrics` of a process without HTTP of its own (`mercato worker --metrics-port`).

A worker runs the consumers, relays and jobs, so the event, saga and job counters it keeps are
only its own; this serves them on a port of its own, behind the same rule as every service's
`/metrics` (an allowed address or an admin's token, `mercato.platform.metrics_access`).
"""

from __future__ import annotations

import asyncio

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mercato.platform.http_errors import install_error_handlers
from mercato.platform.metrics_access import MetricsGuard, metrics_guard
from mercato.platform.net import trust_forwarded_headers
from mercato.platform.runtime import Platform


def metrics_app(guard: MetricsGuard, trusted_proxies: tuple[str, ...] = ()) -> FastAPI:
    """An app answering `/metrics` only."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    trust_forwarded_headers(app, trusted_proxies)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus exposition of this process's registry."""
        await guard(request)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def start_metrics_server(
    platform: Platform, host: str, port: int, stop: asyncio.Event
) -> asyncio.Task[None]:
    """Serve `platform`'s process registry on `host`:`port` until `stop` is set."""
    guard = metrics_guard(platform.settings.metrics_allow, platform.auth.optional)
    app = metrics_app(guard, platform.settings.trusted_proxies)
    return asyncio.create_task(serve_metrics(app, host, port, stop), name="metrics-server")


async def serve_metrics(app: FastAPI, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve `app` on `host`:`port` until `stop` is set."""
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, server_header=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task
