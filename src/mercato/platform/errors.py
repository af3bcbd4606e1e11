"""Every failure answers RFC 9457 problem+json; domain code raises the exceptions below."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mercato.platform.events.envelope import current_correlation_id

log = structlog.get_logger("mercato.http")

PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    """A rule was broken; carries the HTTP status and a short problem type slug."""

    status: int = 400
    type_slug: str = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = dict(headers) if headers else None


class NotFound(DomainError):
    """The resource does not exist (or is not visible to the caller)."""

    status = 404
    type_slug = "not-found"


class Conflict(DomainError):
    """The request collides with the current state (taken name, reused key, ...)."""

    status = 409
    type_slug = "conflict"


class Invalid(DomainError):
    """The input is well-formed but breaks a rule."""

    status = 422
    type_slug = "validation-error"


class Unauthorized(DomainError):
    """No valid credentials."""

    status = 401
    type_slug = "unauthorized"

    def __init__(self, detail: str = "authentication required", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kwargs)


class Forbidden(DomainError):
    """Valid credentials without the needed role or scope."""

    status = 403
    type_slug = "forbidden"


class TooManyRequests(DomainError):
    """Throttled; `retry_after` seconds until the caller may try again."""

    status = 429
    type_slug = "too-many-requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = max(1, retry_after)


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
    phrase = _phrase(status)
    body: dict[str, Any] = {
        "type": f"https://mercato.dev/problems/{type_slug or _slug(phrase)}",
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
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


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


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception the app can raise to problem+json."""

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return problem(
            exc.status, exc.detail, type_slug=exc.type_slug, errors=exc.errors, headers=exc.headers
        )

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

    @app.exception_handler(RedisError)
    async def _shared_state(request: Request, exc: RedisError) -> JSONResponse:
        # Redis holds revocations, budgets and caches in the distributed mode: while it is
        # unreachable the answer is "try again shortly", not an internal error.
        log.warning(
            "shared state unavailable", path=request.url.path, error_type=type(exc).__name__
        )
        return problem(
            503, "shared state (Redis) unavailable; retry shortly", headers={"Retry-After": "1"}
        )

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
