"""The token attack suite over HTTP, against identity's real keys: every forged, stale,
misdirected, revoked or reused credential is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from mercato.platform.auth import SigningKey, generate_signing_key, issue_access_token
from mercato.platform.clock import utcnow
from mercato.platform.settings import Settings
from tests.harness import Stack, admin, embedded_settings, register_user, stack

ME = "/api/v1/auth/me"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def s(data_dir: Path) -> AsyncIterator[Stack]:
    async with stack(embedded_settings(data_dir), ["accounts", "identity"]) as running:
        yield running


async def signing_key(s: Stack) -> SigningKey:
    return await s.platform.contexts["identity"].deps.keyring.signing_key()


async def forge(s: Stack, key: SigningKey | None = None, **overrides: Any) -> str:
    """A token signed by identity's own key (unless `key`), claims overridable."""
    params: dict[str, Any] = {
        "issuer": s.settings.issuer,
        "audience": s.settings.audience,
        "subject": "someone",
        "client_id": "mercato-web",
        "scopes": [],
        "roles": ["user"],
        "lifetime_seconds": 600,
        **overrides,
    }
    token, _ = issue_access_token(key or await signing_key(s), **params)
    return token


async def refused(s: Stack, token: str, path: str = ME) -> httpx.Response:
    answer = await s.client.get(path, headers=bearer(token))
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert token not in answer.text
    return answer


async def test_a_well_formed_token_passes_so_the_refusals_below_mean_something(s: Stack) -> None:
    answer = await s.client.get(ME, headers=bearer(await forge(s)))
    assert answer.status_code == 200 and answer.json()["sub"] == "someone"


async def test_alg_none_is_refused(s: Stack) -> None:
    key = await signing_key(s)
    good = await forge(s)
    _, payload, _ = good.split(".")
    header = b64json({"alg": "none", "typ": "at+jwt", "kid": key.kid})
    await refused(s, f"{header}.{payload}.")


async def test_hs256_signed_with_the_public_key_is_refused(s: Stack) -> None:
    key = await signing_key(s)
    public_pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, payload, _ = (await forge(s, roles=["admin", "user"])).split(".")
    header = b64json({"alg": "HS256", "typ": "at+jwt", "kid": key.kid})
    signing_input = f"{header}.{payload}".encode()
    signature = b64(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    await refused(s, f"{header}.{payload}.{signature}", "/api/v1/admin/clients")


@pytest.mark.parametrize("kid", ["unknown-kid", "../../../dev/null", "' OR '1'='1", "x" * 300])
async def test_unknown_or_injected_kid_is_refused(s: Stack, kid: str) -> None:
    own = generate_signing_key(kid=kid)
    await refused(s, await forge(s, key=own))


async def test_another_key_under_identitys_kid_is_refused(s: Stack) -> None:
    impostor = generate_signing_key(kid=(await signing_key(s)).kid)
    await refused(s, await forge(s, key=impostor))


async def test_expired_token_is_refused(s: Stack) -> None:
    token = await forge(s, now=utcnow() - timedelta(hours=1), lifetime_seconds=600)
    assert (await refused(s, token)).json()["detail"] == "token expired"


async def test_not_yet_valid_token_is_refused(s: Stack) -> None:
    token = await forge(s, now=utcnow() + timedelta(hours=1))
    assert (await refused(s, token)).json()["detail"] == "token not yet valid"


async def test_wrong_issuer_is_refused(s: Stack) -> None:
    await refused(s, await forge(s, issuer="https://evil.example"))


async def test_wrong_audience_is_refused(s: Stack) -> None:
    await refused(s, await forge(s, audience="another-api"))


async def test_tampered_payload_is_refused(s: Stack) -> None:
    jane = await register_user(s, "jane")
    token = jane.headers["Authorization"].split()[1]
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin", "user"]
    await refused(s, f"{header}.{b64json(claims)}.{signature}", "/api/v1/admin/clients")


async def test_token_revoked_by_logout_is_refused(backend: Settings) -> None:
    async with stack(backend, ["accounts", "identity"]) as s:
        jane = await register_user(s, "jane")
        assert (await s.client.get(ME, headers=jane.headers)).status_code == 200
        assert (await s.client.post("/api/v1/auth/logout", headers=jane.headers)).status_code == 204
        answer = await s.client.get(ME, headers=jane.headers)
        assert answer.status_code == 401 and answer.json()["detail"] == "token revoked"


async def test_refresh_token_reused_after_rotation_revokes_the_family(backend: Settings) -> None:
    async with stack(backend, ["accounts", "identity"]) as s:
        await register_user(s, "jane")
        first = await s.client.post(
            "/api/v1/auth/login",
            json={"username_or_email": "jane", "password": "Correct-Horse-9"},
        )
        old = first.json()["refresh_token"]
        rotated = await s.client.post("/api/v1/auth/refresh", json={"refresh_token": old})
        assert rotated.status_code == 200
        new = rotated.json()
        again = await s.client.post("/api/v1/auth/refresh", json={"refresh_token": old})
        assert again.status_code == 401
        # The thief's replay ended the session: the rightful new tokens are dead too.
        refused_new = await s.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": new["refresh_token"]}
        )
        assert refused_new.status_code == 401
        assert (await s.client.get(ME, headers=bearer(new["access_token"]))).status_code == 401
        assert (
            await s.client.get(ME, headers=bearer(first.json()["access_token"]))
        ).status_code == 401


async def register_client(s: Stack, scopes: list[str]) -> tuple[str, str]:
    boss = await admin(s)
    answer = await s.client.post(
        "/api/v1/admin/clients",
        headers=boss.headers,
        json={"client_id": "robot", "name": "Robot", "scopes": scopes},
    )
    assert answer.status_code == 201, answer.text
    return "robot", answer.json()["client_secret"]


def one_off(secret: str) -> str:
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


async def test_client_secret_one_character_off_is_refused(s: Stack) -> None:
    client_id, secret = await register_client(s, ["catalog.read"])
    form = {"grant_type": "client_credentials"}
    good = await s.client.post("/oauth/token", data=form, auth=(client_id, secret))
    assert good.status_code == 200
    for attempt in (
        {"auth": (client_id, one_off(secret))},
        {"data": {**form, "client_id": client_id, "client_secret": one_off(secret)}},
    ):
        answer = await s.client.post("/oauth/token", **{"data": form, **attempt})  # type: ignore[arg-type]
        assert answer.status_code == 401
        assert answer.json()["error"] == "invalid_client"
        assert "access_token" not in answer.text


async def test_scope_the_client_was_not_granted_is_refused(s: Stack) -> None:
    client_id, secret = await register_client(s, ["catalog.read"])
    answer = await s.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "catalog.read mercato.admin"},
        auth=(client_id, secret),
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_scope"
    assert answer.headers["cache-control"] == "no-store"
