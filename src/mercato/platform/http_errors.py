"""Every failure answers RFC 9457 problem+json: the web layer's mapping of exceptions.

Use cases raise the plain exceptions of `mercato.platform.errors`; this module says how each
one answers over HTTP (status, body, headers), and answers FastAPI's validation errors,
Starlette's HTTP errors, a Redis outage and anything unhandled the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mercato.platform.errors import DomainError
from mercato.platform.events.envelope import current_correlation_id

log = structlog.get_logger("mercato.http")

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPES = "https://mercato.dev/problems/"


def problem_body(
    status: int,
    detail: str,
    *,
    type_slug: str | None = None,
    title: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem+json document for one failure (tagged with the request's correlation id)."""
    phrase = _phrase(status)
    body: dict[str, Any] = {
        "type": f"{PROBLEM_TYPES}{type_slug or _slug(phrase)}",
        "title": title or phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = list(errors)
    correlation_id = current_correlation_id.get()
    if correlation_id:
        body["correlation_id"] = correlation_id
    if extra:
        body.update(extra)
    return body


def problem(
    status: int,
    detail: str,
    *,
    type_slug: str | None = None,
    title: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """Build a problem+json response."""
    body = problem_body(
        status, detail, type_slug=type_slug, title=title, errors=errors, extra=extra
    )
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_headers(exc: DomainError) -> dict[str, str] | None:
    """The headers a domain error answers with: its challenge, when to retry; None if neither."""
    headers: dict[str, str] = {}
    if exc.challenge is not None:
        headers["WWW-Authenticate"] = exc.challenge
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return headers or None


def domain_problem(exc: DomainError) -> JSONResponse:
    """The problem+json answer of a domain error."""
    return problem(
        exc.status,
        exc.detail,
        type_slug=exc.type_slug,
        title=exc.title,
        errors=exc.errors,
        headers=problem_headers(exc),
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _slug(phrase: str) -> str:
    return phrase.lower().replace(" ", "-").replace("'", "")


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Echo where and what, never the submitted value: it may be a password.
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


async def _shared_state(request: Request, exc: Exception) -> JSONResponse:
    # Redis holds revocations, budgets and caches in the distributed mode: while it is
    # unreachable the answer is "try again shortly", not an internal error.
    log.warning("shared state unavailable", path=request.url.path, error_type=type(exc).__name__)
    return problem(
        503, "shared state (Redis) unavailable; retry shortly", headers={"Retry-After": "1"}
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception the app can raise to problem+json."""

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return domain_problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:5])
        return problem(
            422, f"invalid request: {fields}", type_slug="validation-error", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _phrase(exc.status_code)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            from mercato.platform.openapi import allowed_methods  # it imports this module

            allowed = allowed_methods(request.app, request.url.path)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
        return problem(exc.status_code, detail, headers=headers or None)

    # Redis is imported where it is configured (the platform's constructor makes its client
    # before any app), and only then can a RedisError happen: an embedded `mercato run` does
    # not import it for this handler (~80 ms of start-up).
    redis_exceptions = sys.modules.get("redis.exceptions")
    if redis_exceptions is not None:
        app.add_exception_handler(redis_exceptions.RedisError, _shared_state)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the log, tagged with the correlation id the client receives;
        # the request body is never logged.
        log.error(
            "unhandled error",
            method=request.method,
            path=request.url.path,
            error_type=type(exc).__name__,
            exc_info=exc,
        )
        return problem(500, "internal error; quote the correlation_id when reporting it")
