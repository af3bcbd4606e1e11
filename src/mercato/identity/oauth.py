"""The OAuth 2.0 token, revocation and introspection endpoints' use cases (RFC 6749/7009/7662)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import jwt
import structlog

from mercato.identity.clients import (
    AuthenticatedClient,
    ClientCredentials,
    OAuthError,
    authenticate_client,
)
from mercato.identity.domain import (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_PASSWORD,
    GRANT_REFRESH_TOKEN,
    INTROSPECT_SCOPE,
    digest,
    grant_scopes,
    parse_scope,
)
from mercato.identity.service import GrantRefused, LoginAttempt, login, refresh
from mercato.identity.sessions_store import SessionRepository
from mercato.identity.settings import IdentitySettings
from mercato.identity.tokens import IdentityDeps, IssuedTokens, end_families, mint_machine
from mercato.identity.tokens import revoke_access as revoke_access_tokens
from mercato.platform.auth import Principal
from mercato.platform.clock import utcnow
from mercato.platform.errors import RuleBroken, TooManyRequests, Unauthorized

log = structlog.get_logger("mercato.identity")


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise OAuthError("invalid_request", f"missing {name}")
    return value


def _scopes(raw: str | None, allowed: tuple[str, ...]) -> list[str]:
    try:
        return grant_scopes(parse_scope(raw), allowed)
    except RuleBroken as exc:
        raise OAuthError("invalid_scope", exc.message) from None


async def _take_budget(deps: IdentityDeps, auth: AuthenticatedClient) -> None:
    if auth.client is None:
        return
    wait = await deps.budget.take(auth.client, time.time())
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        log.warning("client token budget spent", client_id=auth.client_id, retry_after=seconds)
        raise OAuthError(
            "slow_down",
            f"token budget of {auth.client.token_budget_per_hour} per hour spent; "
            f"retry after {seconds} s",
            status=429,
            headers={"Retry-After": str(seconds)},
        )


def _may_use(grant_types: tuple[str, ...], grant_type: str) -> bool:
    # A client allowed the password grant receives refresh tokens, so it may spend them.
    if grant_type == GRANT_REFRESH_TOKEN and GRANT_PASSWORD in grant_types:
        return True
    return grant_type in grant_types


def enabled_grants(settings: IdentitySettings) -> tuple[str, ...]:
    """The grants this server answers (and discovery lists): the password grant only when
    `identity_password_grant_enabled` turns it on."""
    grants = [GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN]
    if settings.identity_password_grant_enabled:
        grants.insert(1, GRANT_PASSWORD)
    return tuple(grants)


async def token_request(
    deps: IdentityDeps,
    form: Mapping[str, str],
    presented: ClientCredentials | None,
    address: str,
) -> IssuedTokens:
    """Answer `POST /oauth/token` for the enabled grants (`enabled_grants`)."""
    grant_type = _required(form, "grant_type")
    supported = enabled_grants(deps.settings)
    if grant_type not in supported:
        raise OAuthError("unsupported_grant_type", f"supported: {', '.join(supported)}")
    auth = await authenticate_client(
        deps, presented, allow_public=grant_type == GRANT_REFRESH_TOKEN
    )
    if auth.client is not None and not _may_use(auth.client.grant_types, grant_type):
        raise OAuthError("unauthorized_client", f"client may not use {grant_type}")
    if grant_type == GRANT_CLIENT_CREDENTIALS:
        return await _client_credentials(deps, auth, form)
    if grant_type == GRANT_PASSWORD:
        return await _password(deps, auth, form, address)
    return await _refresh(deps, auth, form)


async def _client_credentials(
    deps: IdentityDeps, auth: AuthenticatedClient, form: Mapping[str, str]
) -> IssuedTokens:
    assert auth.client is not None  # only the refresh grant admits the public client
    scopes = _scopes(form.get("scope"), auth.client.scopes)
    await _take_budget(deps, auth)
    token, _ = await mint_machine(deps, auth.client, scopes)
    return IssuedTokens(
        access_token=token,
        expires_in=deps.settings.identity_machine_token_seconds,
        scope=" ".join(scopes),
    )


async def _password(
    deps: IdentityDeps, auth: AuthenticatedClient, form: Mapping[str, str], address: str
) -> IssuedTokens:
    assert auth.client is not None
    username = _required(form, "username")
    password = _required(form, "password")
    scopes = _scopes(form.get("scope"), auth.client.scopes) if form.get("scope") else []
    await _take_budget(deps, auth)
    attempt = LoginAttempt(
        identifier=username,
        password=password,
        address=address,
        client_id=auth.client_id,
        scopes=tuple(scopes),
    )
    try:
        return await login(deps, attempt)
    except Unauthorized:
        raise OAuthError("invalid_grant", "invalid resource owner credentials") from None
    except TooManyRequests as exc:
        raise OAuthError(
            "slow_down",
            "too many failed logins; try again later",
            status=429,
            headers={"Retry-After": str(exc.retry_after)},
        ) from None


async def _refresh(
    deps: IdentityDeps, auth: AuthenticatedClient, form: Mapping[str, str]
) -> IssuedTokens:
    token = _required(form, "refresh_token")
    await _take_budget(deps, auth)
    try:
        issued = await refresh(deps, token, auth.client_id)
    except GrantRefused as exc:
        raise OAuthError("invalid_grant", exc.detail) from None
    requested = parse_scope(form.get("scope")) if form.get("scope") else None
    if requested is not None and not set(requested) <= set(issued.scope.split()):
        # RFC 6749 §6: never more than originally granted (the rotation already happened,
        # as it would for a client that then drops the answer).
        raise OAuthError("invalid_scope", "requested scope exceeds the original grant")
    return issued


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


async def _verified(deps: IdentityDeps, token: str) -> Principal | None:
    try:
        return await deps.verifier.verify(token)
    except Unauthorized:
        return None


async def revoke(
    deps: IdentityDeps, presented: ClientCredentials | None, token: str, hint: str | None
) -> None:
    """RFC 7009: revoke an access or refresh token issued to the calling client.

    An invalid, expired or unknown token is answered like a revoked one (200, no effect): the
    caller's goal, that the token not work, holds either way.
    """
    auth = await authenticate_client(deps, presented, allow_public=True)
    # The hint only says where to look first (RFC 7009 §2.1); the two kinds cannot be confused
    # (refresh tokens hold no dots), so the token's shape decides.
    del hint
    if _looks_like_jwt(token):
        principal = await _verified(deps, token)
        if principal is None:
            return
        if principal.client_id != auth.client_id:
            raise OAuthError("unauthorized_client", "the token was not issued to this client")
        async with deps.uow() as uow:
            await revoke_access_tokens(
                deps,
                uow,
                [(principal.jti, principal.expires_at)],
                reason="revoked_by_client",
                user_id=None if principal.is_machine else principal.sub,
                client_id=principal.client_id,
            )
        return
    async with deps.uow() as uow:
        record = await uow.repository(SessionRepository).find_refresh(digest(token))
        if record is None:
            return
        if record.family.client_id != auth.client_id:
            raise OAuthError("unauthorized_client", "the token was not issued to this client")
        await end_families(
            deps, uow, [record.family.id], reason="revoked_by_client", user_id=record.family.user_id
        )


async def introspect(
    deps: IdentityDeps, presented: ClientCredentials | None, token: str
) -> dict[str, Any]:
    """RFC 7662: whether a token is active, and its claims when it is.

    Only clients granted `INTROSPECT_SCOPE` learn anything (DESIGN §2): to any other client
    every token is inactive, so a client cannot probe tokens it was handed or found.
    """
    auth = await authenticate_client(deps, presented, allow_public=False)
    if auth.client is None or INTROSPECT_SCOPE not in auth.client.scopes:
        return {"active": False}
    if _looks_like_jwt(token):
        principal = await _verified(deps, token)
        if principal is None:
            return {"active": False}
        # Verified just above; decoding again only reads the claims the Principal drops.
        claims = jwt.decode(token, options={"verify_signature": False})
        answer = {
            "active": True,
            "token_type": "Bearer",
            "scope": claims.get("scope", ""),
            "client_id": claims.get("client_id"),
            "sub": claims["sub"],
            "aud": claims["aud"],
            "iss": claims["iss"],
            "exp": claims["exp"],
            "iat": claims["iat"],
            "nbf": claims.get("nbf"),
            "jti": claims["jti"],
        }
        for name in ("username", "email", "roles"):
            if name in claims:
                answer[name] = claims[name]
        return {k: v for k, v in answer.items() if v is not None}
    async with deps.read() as conn:
        record = await SessionRepository(conn).find_refresh(digest(token))
    # Another client's refresh token is reported inactive, even to an introspecting client:
    # a refresh token is its owner's secret, not a bearer token a resource server is shown.
    if record is None or not record.usable(utcnow()) or record.family.client_id != auth.client_id:
        return {"active": False}
    return {
        "active": True,
        "token_type": "refresh_token",
        "client_id": record.family.client_id,
        "sub": record.family.user_id,
        "scope": " ".join(record.family.scopes),
        "iat": int(record.issued_at.timestamp()),
        "exp": int(record.expires_at.timestamp()),
    }
