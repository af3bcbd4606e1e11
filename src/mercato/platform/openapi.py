"""The OpenAPI document tells clients what an error answer looks like.

FastAPI documents only the success answer and a 422 in its own `HTTPValidationError` shape, but
every failure here answers RFC 9457 problem+json (`http_errors.py`), and the OAuth endpoints answer
RFC 6749 error objects. This rewrites the generated document once so that each operation's 422
and `default` answers say so, and clients generated from it can read our errors.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from starlette.routing import compile_path

from mercato.platform.http_errors import PROBLEM_JSON

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details: what went wrong, for people and for programs.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A URI naming the kind of problem."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What was wrong with this request."},
        "errors": {
            "type": "array",
            "description": "Validation errors, one per field that was wrong.",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "correlation_id": {"type": "string", "description": "Quote it when reporting."},
    },
}

OAUTH_ERROR_SCHEMA: dict[str, Any] = {
    "title": "OAuthError",
    "description": "RFC 6749 §5.2 error response.",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "examples": ["invalid_client", "invalid_scope"]},
        "error_description": {"type": "string"},
    },
}

_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def document_errors(app: FastAPI) -> None:
    """Make `app`'s OpenAPI document describe its problem+json and OAuth error answers."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_error_responses(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def with_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with each operation's 422 and `default` answers as problem+json (OAuth
    endpoints: RFC 6749 error objects). Changes and returns the same dict."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path, item in document.get("paths", {}).items():
        oauth = path.startswith("/oauth/")
        media = "application/json" if oauth else PROBLEM_JSON
        ref = {"$ref": "#/components/schemas/" + ("OAuthError" if oauth else "Problem")}
        if oauth:
            schemas["OAuthError"] = OAUTH_ERROR_SCHEMA
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            if "422" in responses and not oauth:
                responses["422"] = {
                    "description": "The request was malformed: `errors` names each field.",
                    "content": {PROBLEM_JSON: {"schema": ref}},
                }
            responses.setdefault(
                "default",
                {
                    "description": "Any other failure (401, 403, 404, 409, 413, 429, 503, ...).",
                    "content": {media: {"schema": ref}},
                },
            )
    if "/HTTPValidationError'" not in repr(document.get("paths", {})):
        for name in _FASTAPI_ERROR_SCHEMAS:
            schemas.pop(name, None)
    return document


def json_examples(**examples: dict[str, Any]) -> dict[str, Any]:
    """A route's `openapi_extra` naming JSON request-body examples (Swagger UI offers them in
    "Try it out"); FastAPI merges it into the operation it generates."""
    return {
        "requestBody": {
            "content": {
                "application/json": {
                    "examples": {
                        name: {"summary": name.replace("_", " "), "value": value}
                        for name, value in examples.items()
                    }
                }
            }
        }
    }


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the documented operations accept on `path` (for a 405's `Allow`).

    Starlette's router names only the first route whose path matched, and each method here is
    its own route, so `Allow` would list one method of several; the document has them all.
    """
    methods: set[str] = set()
    for pattern, verbs in _path_methods(app):
        if pattern.match(path):
            methods |= verbs
    return sorted(methods)


def _path_methods(app: FastAPI) -> tuple[tuple[re.Pattern[str], frozenset[str]], ...]:
    known: tuple[tuple[re.Pattern[str], frozenset[str]], ...] | None = getattr(
        app.state, "path_methods", None
    )
    if known is None:
        known = tuple(
            (compile_path(template)[0], frozenset(m.upper() for m in item if m in _METHODS))
            for template, item in app.openapi().get("paths", {}).items()
        )
        app.state.path_methods = known
    return known
