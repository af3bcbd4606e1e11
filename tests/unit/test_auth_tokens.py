"""The token attack suite: every way a forged, stale or misdirected token must be refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from mercato.platform.auth import (
    MemoryRevocationStore,
    Principal,
    SigningKey,
    StaticKeySource,
    TokenVerifier,
    generate_signing_key,
    issue_access_token,
    jwk_thumbprint,
    jwks,
)
from mercato.platform.clock import utcnow
from mercato.platform.errors import Unauthorized

ISSUER = "https://id.mercato.test"
AUDIENCE = "mercato"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


class Setup:
    """A verifier over an in-process JWKS that tests can rotate."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys) or [generate_signing_key()]
        self.provider_calls = 0
        self.revocations = MemoryRevocationStore()
        self.verifier = TokenVerifier(
            StaticKeySource(self._jwks), self.revocations, issuer=ISSUER, audience=AUDIENCE
        )

    def _jwks(self) -> dict[str, Any]:
        self.provider_calls += 1
        return jwks(self.keys)

    @property
    def key(self) -> SigningKey:
        return self.keys[0]

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": "user-1",
            "aud": AUDIENCE,
            "exp": now + 600,
            "iat": now,
            "nbf": now,
            "jti": "jti-1",
            "client_id": "web",
            "scope": "",
            "roles": ["user"],
        }
        claims.update(overrides)
        return claims

    def issue(self, key: SigningKey | None = None, **kwargs: Any) -> str:
        params: dict[str, Any] = {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "subject": "user-1",
            "client_id": "web",
            "scopes": [],
            "roles": ["user"],
            "lifetime_seconds": 900,
            "extra_claims": {"username": "alice", "email": "alice@example.com"},
        }
        params.update(kwargs)
        token, _ = issue_access_token(key or self.key, **params)
        return token

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        """Sign arbitrary claims/header with the real key (to isolate one defect at a time)."""
        headers = {"typ": "at+jwt", "kid": self.key.kid, **header}
        return jwt.encode(claims, self.key.private_key, algorithm=self.key.alg, headers=headers)

    async def rejects(self, token: str, reason: str) -> None:
        with pytest.raises(Unauthorized) as info:
            await self.verifier.verify(token)
        assert info.value.detail == reason
        assert not token or token not in info.value.detail


@pytest.fixture
def env() -> Setup:
    return Setup()


async def test_valid_token_passes(env: Setup) -> None:
    token = env.issue(scopes=["orders.read", "orders.write"])
    principal = await env.verifier.verify(token)
    assert principal.sub == "user-1"
    assert principal.roles == frozenset({"user"})
    assert principal.scopes == frozenset({"orders.read", "orders.write"})
    assert principal.client_id == "web"
    assert principal.username == "alice"
    assert principal.email == "alice@example.com"
    assert principal.is_machine is False
    assert principal.is_admin is False
    assert not hasattr(principal, "token")


async def test_valid_eddsa_token_passes() -> None:
    env = Setup(generate_signing_key("EdDSA"))
    principal = await env.verifier.verify(env.issue())
    assert principal.sub == "user-1"


async def test_machine_token_has_no_roles_and_admin_by_scope(env: Setup) -> None:
    token = env.issue(
        subject="exporter", client_id="exporter", roles=None, scopes=["mercato.admin"]
    )
    principal = await env.verifier.verify(token)
    assert principal.is_machine and principal.is_admin
    assert principal.roles == frozenset()


async def test_person_is_admin_by_role_not_by_scope(env: Setup) -> None:
    assert (await env.verifier.verify(env.issue(roles=["admin"]))).is_admin
    assert not (await env.verifier.verify(env.issue(scopes=["mercato.admin"]))).is_admin


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
async def test_alg_none_is_rejected(env: Setup, alg: str) -> None:
    header = {"alg": alg, "typ": "at+jwt", "kid": env.key.kid}
    token = f"{b64json(header)}.{b64json(env.claims())}."
    await env.rejects(token, "algorithm not allowed")


async def test_hs256_signed_with_the_public_key_is_rejected(env: Setup) -> None:
    # Algorithm confusion: the attacker knows the public key (it is in the JWKS) and uses its
    # PEM as an HMAC secret, hoping the verifier feeds the same bytes to HS256.
    pem = env.key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": env.key.kid}
    signing_input = f"{b64json(header)}.{b64json(env.claims(roles=['admin']))}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    await env.rejects(f"{signing_input}.{b64url(signature)}", "algorithm not allowed")


async def test_verifier_refuses_a_symmetric_allow_list() -> None:
    with pytest.raises(ValueError):
        TokenVerifier(
            StaticKeySource(dict),
            MemoryRevocationStore(),
            issuer=ISSUER,
            audience=AUDIENCE,
            algorithms=("ES256", "HS256"),
        )


async def test_unknown_kid_is_rejected_after_rereading_the_key_set(env: Setup) -> None:
    stranger = generate_signing_key()
    calls_before = env.provider_calls
    await env.rejects(env.issue(key=stranger), "unknown signing key")
    assert env.provider_calls == calls_before + 1


async def test_missing_kid_is_rejected(env: Setup) -> None:
    token = jwt.encode(
        env.claims(), env.key.private_key, algorithm="ES256", headers={"typ": "at+jwt"}
    )
    await env.rejects(token, "missing key id")


@pytest.mark.parametrize("kid", ["../../etc/passwd", "' OR 1=1 --", "x" * 500, "*"])
async def test_injected_kid_is_just_an_unknown_name(env: Setup, kid: str) -> None:
    await env.rejects(env.sign(env.claims(), kid=kid), "unknown signing key")


async def test_embedded_jwk_and_jku_headers_are_ignored(env: Setup) -> None:
    # The attacker signs with their own key and points the header at it, naming our kid.
    attacker = generate_signing_key()
    header = {
        "typ": "at+jwt",
        "kid": env.key.kid,
        "jwk": attacker.public_jwk(),
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
    }
    token = jwt.encode(env.claims(), attacker.private_key, algorithm="ES256", headers=header)
    await env.rejects(token, "bad signature")
    # ... and naming the attacker's own kid finds no key at all.
    header["kid"] = attacker.kid
    token = jwt.encode(env.claims(), attacker.private_key, algorithm="ES256", headers=header)
    await env.rejects(token, "unknown signing key")


async def test_alg_that_does_not_match_the_key_is_rejected(env: Setup) -> None:
    attacker = generate_signing_key("EdDSA")
    header = {"typ": "at+jwt", "kid": env.key.kid}
    token = jwt.encode(env.claims(), attacker.private_key, algorithm="EdDSA", headers=header)
    await env.rejects(token, "algorithm does not match key")


async def test_expired_token_is_rejected(env: Setup) -> None:
    token = env.issue(now=utcnow() - timedelta(hours=1), lifetime_seconds=900)
    await env.rejects(token, "token expired")


async def test_token_within_leeway_still_passes(env: Setup) -> None:
    now = int(time.time())
    await env.verifier.verify(env.sign(env.claims(exp=now - 2, iat=now - 60, nbf=now - 60)))


async def test_not_yet_valid_token_is_rejected(env: Setup) -> None:
    now = int(time.time())
    await env.rejects(env.sign(env.claims(nbf=now + 600)), "token not yet valid")
    await env.rejects(env.issue(now=utcnow() + timedelta(hours=1)), "token not yet valid")


async def test_wrong_issuer_is_rejected(env: Setup) -> None:
    await env.rejects(env.issue(issuer="https://evil.example"), "wrong issuer")


async def test_wrong_audience_is_rejected(env: Setup) -> None:
    await env.rejects(env.issue(audience="another-api"), "wrong audience")


async def test_missing_required_claim_is_rejected(env: Setup) -> None:
    claims = env.claims()
    del claims["jti"]
    await env.rejects(env.sign(claims), "missing claim")


async def test_tampered_payload_is_rejected(env: Setup) -> None:
    header, _, signature = env.issue().split(".")
    forged = b64json(env.claims(roles=["admin"]))
    await env.rejects(f"{header}.{forged}.{signature}", "bad signature")


async def test_revoked_token_is_rejected(env: Setup) -> None:
    token, claims = issue_access_token(
        env.key,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="user-1",
        client_id="web",
        scopes=[],
        roles=["user"],
        lifetime_seconds=900,
    )
    await env.revocations.revoke(claims["jti"], claims["exp"])
    await env.rejects(token, "token revoked")


async def test_revoked_client_refuses_its_earlier_tokens_only(env: Setup) -> None:
    def issue_for(client_id: str, issued_at: int) -> str:
        token, _ = issue_access_token(
            env.key,
            issuer=ISSUER,
            audience=AUDIENCE,
            subject=client_id,
            client_id=client_id,
            scopes=[],
            roles=None,
            lifetime_seconds=900,
            now=datetime.fromtimestamp(issued_at, UTC),
        )
        return token

    now = int(time.time())
    before, after = issue_for("robot", now - 10), issue_for("robot", now + 1)
    other = issue_for("other", now - 10)
    await env.revocations.revoke_client("robot", now, now + 900)
    await env.rejects(before, "token revoked")
    assert (await env.verifier.verify(after)).client_id == "robot"
    assert (await env.verifier.verify(other)).client_id == "other"


def test_memory_store_forgets_a_client_revocation_once_its_tokens_expired() -> None:
    store = MemoryRevocationStore()
    now = int(time.time())
    asyncio.run(store.revoke_client("robot", now, now + 900))
    assert asyncio.run(store.refuses("j", "robot", now))
    store.purge(now + 900 + 3600)
    assert not asyncio.run(store.refuses("j", "robot", now))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+JWT-not", None])
async def test_wrong_typ_is_rejected(env: Setup, typ: str | None) -> None:
    # An ID token or some other JWT signed by the same key must not pass as an access token.
    await env.rejects(env.sign(env.claims(), typ=typ), "not an access token")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        # PyJWT itself refuses unknown critical extensions while reading the header.
        ({"crit": ["exp"]}, "malformed token"),
        ({"crit": ["b64"], "b64": False}, "unsupported header"),
    ],
)
async def test_processing_headers_are_rejected(
    env: Setup, header: dict[str, Any], reason: str
) -> None:
    await env.rejects(env.sign(env.claims(), **header), reason)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "x" * 10_000])
async def test_garbage_is_rejected(env: Setup, token: str) -> None:
    await env.rejects(token, "malformed token")


async def test_key_rotation_keeps_previous_key_verifying(env: Setup) -> None:
    old_token = env.issue()
    assert (await env.verifier.verify(old_token)).sub == "user-1"
    new_key = generate_signing_key()
    env.keys = [new_key, env.key]  # rotation: the new key signs, the old one still verifies
    assert (await env.verifier.verify(env.issue(key=new_key, subject="user-2"))).sub == "user-2"
    assert (await env.verifier.verify(env.issue(key=env.keys[1], subject="u3"))).sub == "u3"
    assert (await env.verifier.verify(old_token)).sub == "user-1"


async def test_cached_token_is_still_checked_for_revocation(env: Setup) -> None:
    token, claims = issue_access_token(
        env.key,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="user-1",
        client_id="web",
        scopes=[],
        roles=["user"],
        lifetime_seconds=900,
    )
    first = await env.verifier.verify(token)
    assert await env.verifier.verify(token) is first  # served from the cache
    await env.revocations.revoke(claims["jti"], claims["exp"])
    await env.rejects(token, "token revoked")


async def test_cache_keeps_no_raw_token_and_is_bounded() -> None:
    env = Setup()
    env.verifier = TokenVerifier(
        StaticKeySource(env._jwks),
        env.revocations,
        issuer=ISSUER,
        audience=AUDIENCE,
        cache_size=2,
    )
    tokens = [env.issue(subject=f"user-{i}") for i in range(3)]
    for token in tokens:
        await env.verifier.verify(token)
    cache = env.verifier._cache
    assert len(cache) == 2
    assert all(isinstance(k, bytes) and len(k) == 32 for k in cache)
    assert not any(token.encode() in k for token in tokens for k in cache)


async def test_cached_token_is_not_served_past_its_expiry(env: Setup) -> None:
    env.verifier.leeway = 0
    token = env.issue(lifetime_seconds=1)
    principal = await env.verifier.verify(token)
    while time.time() < principal.expires_at + 0.05:
        time.sleep(0.05)
    await env.rejects(token, "token expired")


def test_signing_key_round_trips_through_pem() -> None:
    for alg in ("ES256", "EdDSA"):
        key = generate_signing_key(alg)
        assert key.kid == jwk_thumbprint(key.public_key)
        again = SigningKey.from_private_pem(key.kid, key.to_private_pem())
        assert again.alg == alg
        assert again.public_jwk() == key.public_jwk()
        assert "PRIVATE" not in repr(key) and "private_key" not in repr(key)


def test_public_jwk_has_no_private_members() -> None:
    document = jwks([generate_signing_key(), generate_signing_key("EdDSA")])
    for jwk in document["keys"]:
        assert jwk["use"] == "sig"
        assert {"kid", "alg", "kty", "crv", "x"} <= set(jwk)
        assert "d" not in jwk


def test_issue_refuses_to_override_registered_claims() -> None:
    with pytest.raises(ValueError):
        issue_access_token(
            generate_signing_key(),
            issuer=ISSUER,
            audience=AUDIENCE,
            subject="u",
            client_id="web",
            scopes=[],
            roles=None,
            lifetime_seconds=60,
            extra_claims={"roles": ["admin"]},
        )


def test_issued_token_has_the_rfc9068_shape() -> None:
    key = generate_signing_key()
    token, claims = issue_access_token(
        key,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="exporter",
        client_id="exporter",
        scopes=["catalog.read", "catalog.read", "mercato.admin"],
        roles=None,
        lifetime_seconds=3600,
    )
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": key.kid}
    assert claims["scope"] == "catalog.read mercato.admin"
    assert "roles" not in claims
    assert claims["exp"] - claims["iat"] == 3600
    assert {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"} <= set(claims)


def test_principal_is_frozen() -> None:
    principal = Principal(
        sub="u",
        roles=frozenset(),
        scopes=frozenset(),
        client_id=None,
        username=None,
        email=None,
        jti="j",
        expires_at=0,
        is_machine=True,
    )
    with pytest.raises(AttributeError):
        principal.sub = "other"  # type: ignore[misc]
