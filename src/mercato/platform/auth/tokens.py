"""Issuing access tokens: RFC 9068 JWTs signed with a `SigningKey`."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import jwt

from mercato.platform.auth.keys import SigningKey
from mercato.platform.clock import utcnow

ACCESS_TOKEN_TYP = "at+jwt"

# Claims the issuer computes; letting `extra_claims` set them would let a caller mint, say, a
# token for another audience or with roles it was not given.
RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "roles"}
)


def _scope_list(scopes: Iterable[str]) -> list[str]:
    # RFC 6749 §3.3: scope tokens are space-delimited, so a token may not contain whitespace.
    items = list(dict.fromkeys(scopes))  # de-duplicated, order kept
    for scope in items:
        if not scope or any(ch.isspace() for ch in scope):
            raise ValueError(f"invalid scope token {scope!r}")
    return items


def issue_access_token(
    key: SigningKey,
    *,
    issuer: str,
    audience: str | Sequence[str],
    subject: str,
    client_id: str,
    scopes: Iterable[str],
    roles: Iterable[str] | None,
    lifetime_seconds: int,
    extra_claims: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """Sign an RFC 9068 access token; answer `(token, claims)`.

    `roles` is given (possibly empty) for a person and None for a machine (client credentials):
    the presence of the `roles` claim is what marks a person's token to verifiers.
    `extra_claims` adds profile claims such as `username` and `email`; it may not override the
    registered ones. The header carries `typ: at+jwt` and the key's `kid`.
    """
    if lifetime_seconds <= 0:
        raise ValueError("lifetime_seconds must be positive")
    if not subject:
        raise ValueError("subject must not be empty")
    clashes = RESERVED_CLAIMS.intersection(extra_claims or {})
    if clashes:
        raise ValueError(f"extra_claims may not set {sorted(clashes)}")
    issued_at = int((now or utcnow()).timestamp())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience if isinstance(audience, str) else list(audience),
        "exp": issued_at + lifetime_seconds,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": str(uuid.uuid4()),
        "client_id": client_id,
        "scope": " ".join(_scope_list(scopes)),
    }
    if roles is not None:
        claims["roles"] = sorted(set(roles))
    if extra_claims:
        claims.update(extra_claims)
    token = jwt.encode(
        claims,
        key.private_key,
        algorithm=key.alg,  # explicit: never let the library pick from the key or a default
        headers={"typ": ACCESS_TOKEN_TYP, "kid": key.kid},
    )
    return token, dict(claims)
