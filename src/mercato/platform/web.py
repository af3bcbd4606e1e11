"""The HTTP shell of every service: problem+json, correlation ids, body limit, metrics, health."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercato import __version__
from mercato.platform.browser import add_docs, protect
from mercato.platform.events.envelope import current_correlation_id
from mercato.platform.http_errors import PROBLEM_JSON, install_error_handlers
from mercato.platform.ids import new_id_str
from mercato.platform.net import trust_forwarded_headers
from mercato.platform.openapi import document_errors

log = structlog.get_logger("mercato.http")

HTTP_REQUESTS = Counter(
    "mercato_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "mercato_http_request_duration_seconds", "HTTP request latency", ["method", "route"]
)

ReadinessCheck = Callable[[], Awaitable[None]]
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class PlatformMiddleware:
    """One pure-ASGI layer: correlation id, request-size limit, metrics and an access log."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw_id = (headers.get(b"x-correlation-id") or headers.get(b"x-request-id") or b"").decode(
            "latin-1"
        )
        correlation_id = raw_id if _SAFE_ID.match(raw_id) else new_id_str()
        token = current_correlation_id.set(correlation_id)
        started = time.perf_counter()
        status_holder = [500]
        try:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await _send_problem(send, 413, "request body larger than allowed", correlation_id)
                status_holder[0] = 413
                return

            received = 0
            too_large = False

            async def limited_receive() -> Message:
                nonlocal received, too_large
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        too_large = True
                        raise _BodyTooLarge
                return message

            started_response = False

            async def tagged_send(message: Message) -> None:
                nonlocal started_response
                if too_large:
                    # The app turned our exception into its own error answer (FastAPI says
                    # 400 for a body it could not read): answer 413 instead, once.
                    if not started_response:
                        started_response = True
                        status_holder[0] = 413
                        await _send_problem(
                            send, 413, "request body larger than allowed", correlation_id
                        )
                    return
                if message["type"] == "http.response.start":
                    started_response = True
                    status_holder[0] = message["status"]
                    message.setdefault("headers", [])
                    message["headers"] = [
                        *message["headers"],
                        (b"x-correlation-id", correlation_id.encode()),
                    ]
                await send(message)

            try:
                await self.app(scope, limited_receive, tagged_send)
            except _BodyTooLarge:
                if not started_response:
                    status_holder[0] = 413
                    await _send_problem(
                        send, 413, "request body larger than allowed", correlation_id
                    )
            except Exception as exc:
                # Unhandled: answered here, inside the correlation id's context, so the client
                # gets the id that tags the logged traceback. The request body is never logged.
                log.error(
                    "unhandled error",
                    method=scope["method"],
                    path=scope["path"],
                    error_type=type(exc).__name__,
                    exc_info=exc,
                )
                if not started_response:
                    status_holder[0] = 500
                    await _send_problem(
                        send,
                        500,
                        "internal error; quote the correlation_id when reporting it",
                        correlation_id,
                    )
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            HTTP_REQUESTS.labels(scope["method"], route, str(status_holder[0])).inc()
            HTTP_LATENCY.labels(scope["method"], route).observe(elapsed)
            current_correlation_id.reset(token)


class _BodyTooLarge(Exception):
    pass


def _route_template(scope: Scope) -> str:
    # Label by route template, not raw path, so ids don't explode the metric's cardinality.
    # The router records the route it matched in the scope; matching again would cost a walk
    # over every route on every request.
    route = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")


async def _send_problem(send: Send, status: int, detail: str, correlation_id: str) -> None:
    title = HTTPStatus(status).phrase
    body = json.dumps(
        {
            "type": f"https://mercato.dev/problems/{title.lower().replace(' ', '-')}",
            "title": title,
            "status": status,
            "detail": detail,
            "correlation_id": correlation_id,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"x-correlation-id", correlation_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_base_app(
    title: str,
    *,
    max_body_bytes: int,
    readiness: Sequence[tuple[str, ReadinessCheck]] = (),
    ready_services: Mapping[str, Sequence[str]] | None = None,
    lifespan: Any = None,
    trusted_proxies: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    metrics_guard: Callable[[Request], Awaitable[None]] | None = None,
    metrics_refresh: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """A FastAPI app with the platform's errors, middleware and operational endpoints.

    `ready_services` names, for each service of the process, the readiness checks it depends
    on; `/ready` reports each service's status from them. `trusted_proxies` (CIDRs) are the
    peers whose `X-Forwarded-For` names the client (`mercato.platform.net`); `cors_origins`
    the browser origins allowed to read answers (`mercato.platform.browser`). `/metrics` runs
    `metrics_guard` first (who may read it) and `metrics_refresh` (gauges computed at scrape).
    """
    app = FastAPI(
        title=title,
        version=__version__,
        lifespan=lifespan,
        # The docs pages are the platform's own (`browser.add_docs`): the same pages, each
        # with the Content-Security-Policy that allows what it loads.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    install_error_handlers(app)
    document_errors(app)
    add_docs(app, title=title)
    # Added innermost first: the forwarded address is settled before anything else runs, and
    # the browser headers wrap every answer, the platform's own 413/500 ones included.
    app.add_middleware(PlatformMiddleware, max_body_bytes=max_body_bytes)
    protect(app, cors_origins)
    trust_forwarded_headers(app, trusted_proxies)
    checks = list(readiness)

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    async def ready() -> JSONResponse:
        """Readiness: every database, and the broker and Redis where configured, answer.

        `services` says it per service (its database, plus Redis and the broker it shares), in
        the shape the distributed gateway's `/ready` answers too, so one check reads both.
        """
        # At once: a database that hangs does not hold up the answer about the others.
        outcomes = await asyncio.gather(*(_outcome(check) for _, check in checks))
        results = {name: outcome for (name, _), outcome in zip(checks, outcomes, strict=True)}
        ok = all(outcome == "ok" for outcome in results.values())
        services: dict[str, dict[str, Any]] = {}
        for service, names in (ready_services or {}).items():
            own = {name: results[name] for name in names if name in results}
            fine = all(outcome == "ok" for outcome in own.values())
            services[service] = {"status": "ok" if fine else "unavailable", "checks": own}
        body = {"status": "ok" if ok else "unavailable", "checks": results, "services": services}
        return JSONResponse(body, 200 if ok else 503)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus exposition."""
        if metrics_guard is not None:
            await metrics_guard(request)
        if metrics_refresh is not None:
            await metrics_refresh()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _outcome(check: ReadinessCheck) -> str:
    try:
        await check()
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"
    return "ok"
