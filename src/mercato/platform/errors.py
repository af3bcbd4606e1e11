"""What use cases raise when a request cannot be served: plain exceptions, no framework.

Each one carries what an answer needs (status, problem type, title, detail, per-field errors,
when to retry, how to authenticate); the web layer (`mercato.platform.http_errors`) turns them
into RFC 9457 problem+json, so domain and service code never import a web framework.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class DomainError(Exception):
    """A request cannot be served; carries its HTTP status and a short problem type slug.

    `title` None is the status's reason phrase; `retry_after` (seconds) tells a client when to
    come back (answered as `Retry-After`), `challenge` how to authenticate (`WWW-Authenticate`).
    """

    status: int = 400
    type_slug: str = "bad-request"
    title: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        retry_after: int | None = None,
        challenge: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.retry_after = retry_after
        self.challenge = challenge


class NotFound(DomainError):
    """The resource does not exist (or is not visible to the caller)."""

    status = 404
    type_slug = "not-found"


class Conflict(DomainError):
    """The request collides with the current state (taken name, reused key, ...)."""

    status = 409
    type_slug = "conflict"


class RuleBroken(ValueError):
    """An input breaks a domain rule; `field` names it, `loc` is where it sits in the request
    body (default: the field itself)."""

    def __init__(
        self, field_name: str, message: str, *, loc: Sequence[str | int] | None = None
    ) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message
        self.loc: tuple[str | int, ...] = tuple(loc) if loc is not None else (field_name,)


class Invalid(DomainError):
    """The input is well-formed but breaks a rule."""

    status = 422
    type_slug = "validation-error"

    @classmethod
    def of(cls, *broken: RuleBroken, detail: str | None = None) -> Invalid:
        """The 422 for broken rules: one error per rule, located in the body; `detail` defaults
        to `field: message` of each."""
        return cls(
            detail or "; ".join(f"{rule.field}: {rule.message}" for rule in broken),
            errors=[
                {"loc": ["body", *rule.loc], "msg": rule.message, "type": "value_error"}
                for rule in broken
            ],
        )


class Unauthorized(DomainError):
    """No valid credentials; `challenge` is what the client is asked for (WWW-Authenticate)."""

    status = 401
    type_slug = "unauthorized"

    def __init__(
        self,
        detail: str = "authentication required",
        *,
        challenge: str = "Bearer",
        errors: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail, errors=errors, challenge=challenge)


class Forbidden(DomainError):
    """Valid credentials without the needed role or scope."""

    status = 403
    type_slug = "forbidden"


class TooManyRequests(DomainError):
    """Throttled; `retry_after` seconds (at least one) until the caller may try again."""

    status = 429
    type_slug = "too-many-requests"
    retry_after: int

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=max(1, retry_after))
