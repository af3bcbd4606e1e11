"""Verifying access tokens locally: signature, header, claims and revocation."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt

from mercato.platform.auth.keysource import KeySource
from mercato.platform.auth.principal import Principal
from mercato.platform.auth.revocation import RevocationStore
from mercato.platform.errors import Unauthorized

DEFAULT_ALGORITHMS = ("ES256", "EdDSA")
# RFC 9068 §2.1 asks for "at+jwt"; RFC 7515 §4.1.9 lets the "application/" prefix be written.
ACCEPTED_TYPS = frozenset({"at+jwt", "application/at+jwt"})
# Asymmetric only: with "HS*" allowed, a verifier holding only public keys could be fooled into
# using a public key as an HMAC secret (the classic algorithm-confusion attack).
_SYMMETRIC_PREFIX = "HS"
# Real access tokens are well under 2 KiB; refusing giant ones bounds the work an attacker buys.
MAX_TOKEN_LENGTH = 8192
# Header members that would change how the token is processed; none is supported, and RFC 7515
# §4.1.11 says a token marking an unknown extension critical must be rejected.
_REJECTED_HEADERS = ("crit", "b64")
# What a client presenting a bad token is told (RFC 6750 §3.1).
_INVALID_TOKEN = 'Bearer error="invalid_token"'
_REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti"]

_JWT_ERRORS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.MissingRequiredClaimError, "missing claim"),
)


class TokenVerifier:
    """Checks access tokens against identity's keys and the revocation store (the token's jti,
    its client's cut-off and its person's cut-off, in one round trip).

    A token already verified in this process is remembered (by SHA-256 of the token, never the
    token itself) until it expires, so repeated requests skip the signature check; revocation is
    still checked on every call, cached or not.
    """

    def __init__(
        self,
        keys: KeySource,
        revocations: RevocationStore,
        *,
        issuer: str,
        audience: str,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        leeway: int = 5,
        cache_size: int = 10_000,
    ) -> None:
        self.keys = keys
        self.revocations = revocations
        self.issuer = issuer
        self.audience = audience
        self.algorithms = frozenset(algorithms)
        bad = {a for a in self.algorithms if a.startswith(_SYMMETRIC_PREFIX) or a.lower() == "none"}
        if bad or not self.algorithms:
            raise ValueError(f"only asymmetric algorithms may verify tokens, not {sorted(bad)}")
        self.leeway = leeway
        self._cache_size = cache_size
        # Insertion-ordered, so the first entry is the oldest: eviction is O(1).
        self._cache: dict[bytes, Principal] = {}

    async def verify(self, token: str) -> Principal:
        """The principal of a valid, unrevoked access token; `Unauthorized` otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise _reject("malformed token")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        principal = self._cache.get(digest)
        if principal is None or principal.expires_at <= time.time():
            if principal is not None:
                del self._cache[digest]
            principal = await self._verify_uncached(token)
            self._remember(digest, principal)
        # A person's `sub` is checked against their cut-off (roles, status or password changed);
        # a machine's `sub` is its client id, already covered by the client's cut-off.
        subject = None if principal.is_machine else principal.sub
        if await self.revocations.refuses(
            principal.jti, principal.client_id, principal.issued_at, subject
        ):
            raise Unauthorized("token revoked", challenge=_INVALID_TOKEN)
        return principal

    def _remember(self, digest: bytes, principal: Principal) -> None:
        if len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]
        self._cache[digest] = principal

    async def _verify_uncached(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _reject("malformed token") from None
        # The header is attacker-controlled: check alg before anything else looks at it. Members
        # such as jku, jwk, x5u and x5c are never read, so a token cannot bring its own key.
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _reject("algorithm not allowed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPS:
            raise _reject("not an access token")
        if any(name in header for name in _REJECTED_HEADERS):
            raise _reject("unsupported header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _reject("missing key id")
        key = await self.keys.get(kid)
        if key is None:
            raise _reject("unknown signing key")
        # The key fixes the algorithm: a token may not pick another one for the same key.
        if key.algorithm_name != alg:
            raise _reject("algorithm does not match key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],  # a subset of the allow-list, checked above
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise _reject(_reason(exc)) from None
        return _principal(claims)


def _reason(exc: jwt.PyJWTError) -> str:
    for kind, reason in _JWT_ERRORS:
        if isinstance(exc, kind):
            return reason
    return "invalid token"


def _reject(reason: str) -> Unauthorized:
    # Only a fixed, short reason: never the token or its claims, which end up in responses/logs.
    return Unauthorized(reason, challenge=_INVALID_TOKEN)


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _reject(f"malformed claim {name}")
    return value


def _principal(claims: Mapping[str, Any]) -> Principal:
    sub, jti = claims["sub"], claims["jti"]
    if not isinstance(sub, str) or not sub or not isinstance(jti, str) or not jti:
        raise _reject("malformed claims")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise _reject("malformed claim scope")
    roles = claims.get("roles")
    if roles is not None and (
        not isinstance(roles, list) or not all(isinstance(r, str) for r in roles)
    ):
        raise _reject("malformed claim roles")
    return Principal(
        sub=sub,
        roles=frozenset(roles or ()),
        scopes=frozenset(scope.split()),
        client_id=_optional_str(claims, "client_id"),
        username=_optional_str(claims, "username"),
        email=_optional_str(claims, "email"),
        jti=jti,
        expires_at=int(claims["exp"]),
        is_machine=roles is None,
        issued_at=int(claims["iat"]),
    )
