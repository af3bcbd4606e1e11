"""Identity's OAuth 2.0 surface: token, revocation, introspection, discovery and JWKS.

These endpoints speak RFC 6749 rather than problem+json: form-encoded requests, JSON answers
with `Cache-Control: no-store`, and errors as `{"error", "error_description"}`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from mercato.identity import oauth
from mercato.identity.clients import ClientCredentials, OAuthError, invalid_client
from mercato.identity.tokens import IdentityDeps
from mercato.platform.net import client_address
from mercato.platform.service import ServiceContext

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM_TYPE = "application/x-www-form-urlencoded"
# The token request's form fields (RFC 6749 §4.4, §6, §4.3), so a generated client, and
# Swagger UI's "Try it out", can send one. The body is read by hand (`read_form`): a repeated
# field is refused, which a FastAPI `Form` model would not notice.
_FORM_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            FORM_TYPE: {
                "schema": {
                    "title": "TokenRequest",
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {
                            "type": "string",
                            "enum": ["client_credentials", "refresh_token", "password"],
                            "description": "`password` only when the setting turns it on.",
                        },
                        "client_id": {
                            "type": "string",
                            "description": "client_secret_post (or send HTTP Basic instead)",
                        },
                        "client_secret": {"type": "string", "format": "password"},
                        "scope": {
                            "type": "string",
                            "description": "space-separated scopes, e.g. `catalog.read`",
                        },
                        "refresh_token": {"type": "string", "description": "refresh_token grant"},
                        "username": {"type": "string", "description": "password grant"},
                        "password": {"type": "string", "format": "password"},
                    },
                    "additionalProperties": False,
                },
                "examples": {
                    "client_credentials": {
                        "summary": "a machine client (client_secret_post)",
                        "value": {
                            "grant_type": "client_credentials",
                            "client_id": "mercato-exporter",
                            "client_secret": "the secret shown once at creation",
                            "scope": "catalog.read",
                        },
                    },
                },
            }
        },
    },
    "responses": {
        "200": {
            "description": "RFC 6749 §5.1 access token response",
            "content": {
                "application/json": {
                    "schema": {
                        "title": "TokenResponse",
                        "type": "object",
                        "required": ["access_token", "token_type", "expires_in"],
                        "properties": {
                            "access_token": {"type": "string"},
                            "token_type": {"type": "string", "enum": ["Bearer"]},
                            "expires_in": {"type": "integer"},
                            "scope": {"type": "string"},
                            "refresh_token": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
}


def oauth_error(exc: OAuthError) -> JSONResponse:
    """The RFC 6749 §5.2 error answer."""
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description},
        status_code=exc.status,
        headers={**NO_STORE, **exc.headers},
    )


MAX_FORM_FIELDS = 20


async def read_form(request: Request) -> dict[str, str]:
    """The form parameters; each may appear once (RFC 6749 §3.2), empty ones count as absent."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise OAuthError("invalid_request", f"the body must be {FORM_TYPE}")
    try:
        pairs = parse_qsl(
            (await request.body()).decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "malformed form body") from None
    values: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            raise OAuthError("invalid_request", f"parameter {name[:40]} repeated")
        seen.add(name)
        if value:
            values[name] = value
    return values


def client_credentials(request: Request, form: dict[str, str]) -> ClientCredentials | None:
    """The client's credentials from HTTP Basic (client_secret_basic) or the form
    (client_secret_post), or just a `client_id` (the public client); one method only."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise invalid_client("unsupported authentication scheme")
        if "client_secret" in form:
            raise OAuthError("invalid_request", "use one client authentication method")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise invalid_client("malformed Basic credentials") from None
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise invalid_client("malformed Basic credentials")
        # RFC 6749 §2.3.1: both halves are form-urlencoded before Basic encoding.
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if form.get("client_id", client_id) != client_id:
            raise OAuthError("invalid_request", "client_id differs from the authenticated one")
        return ClientCredentials(client_id, secret)
    if "client_id" in form:
        return ClientCredentials(form["client_id"], form.get("client_secret"))
    return None


def build_oauth_router(ctx: ServiceContext[IdentityDeps]) -> APIRouter:
    """The RFC endpoints, bound to this service's context."""
    router = APIRouter(tags=["oauth"])

    @router.post("/oauth/token", openapi_extra=_FORM_SCHEMA, response_model=None)
    async def token(request: Request) -> JSONResponse:
        """RFC 6749 token endpoint: client_credentials and refresh_token grants, and password
        when `MERCATO_IDENTITY_PASSWORD_GRANT_ENABLED` turns it on."""
        try:
            form = await read_form(request)
            presented = client_credentials(request, form)
            address = client_address(request)
            issued = await oauth.token_request(ctx.deps, form, presented, address)
        except OAuthError as exc:
            return oauth_error(exc)
        body: dict[str, Any] = {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        }
        if issued.scope:
            body["scope"] = issued.scope
        if issued.refresh_token is not None:
            body["refresh_token"] = issued.refresh_token
        return JSONResponse(body, headers=NO_STORE)

    @router.post("/oauth/revoke", openapi_extra=_FORM_SCHEMA, response_model=None)
    async def revoke(request: Request) -> Response:
        """RFC 7009 revocation of an access or refresh token issued to the calling client."""
        try:
            form = await read_form(request)
            presented = client_credentials(request, form)
            if "token" not in form:
                raise OAuthError("invalid_request", "missing token")
            await oauth.revoke(ctx.deps, presented, form["token"], form.get("token_type_hint"))
        except OAuthError as exc:
            return oauth_error(exc)
        return Response(status_code=200, headers=NO_STORE)

    @router.post("/oauth/introspect", openapi_extra=_FORM_SCHEMA, response_model=None)
    async def introspect(request: Request) -> JSONResponse:
        """RFC 7662 introspection (for authenticated confidential clients)."""
        try:
            form = await read_form(request)
            presented = client_credentials(request, form)
            if "token" not in form:
                raise OAuthError("invalid_request", "missing token")
            answer = await oauth.introspect(ctx.deps, presented, form["token"])
        except OAuthError as exc:
            return oauth_error(exc)
        return JSONResponse(answer, headers=NO_STORE)

    @router.get("/.well-known/oauth-authorization-server")
    @router.get("/.well-known/openid-configuration")
    async def metadata() -> dict[str, Any]:
        """RFC 8414 authorization server metadata (the same document at both well-known
        paths: RFC 8414 clients ask the first, OpenID Connect discovery the second)."""
        issuer = ctx.settings.issuer.rstrip("/")
        auth_methods = ["client_secret_basic", "client_secret_post"]
        return {
            "issuer": ctx.settings.issuer,
            "token_endpoint": f"{issuer}/oauth/token",
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "introspection_endpoint": f"{issuer}/oauth/introspect",
            # Only what the token endpoint answers now (the password grant may be off).
            "grant_types_supported": list(oauth.enabled_grants(ctx.deps.settings)),
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": [*auth_methods, "none"],
            "introspection_endpoint_auth_methods_supported": auth_methods,
            "service_documentation": f"{issuer}/docs",
        }

    @router.get("/.well-known/jwks.json")
    async def jwks() -> JSONResponse:
        """The public keys verifying access tokens: the current one and previous ones still in
        use."""
        document = await ctx.deps.keyring.fresh_jwks()
        return JSONResponse(document, headers={"Cache-Control": "public, max-age=60"})

    return router
