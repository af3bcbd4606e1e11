"""Signing keys at rest (encrypted with a passphrase), the EdDSA option, and refresh lifetimes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select

from mercato.identity.keyring import KeysUnavailable
from mercato.identity.tables import refresh_tokens, signing_keys
from mercato.platform.clock import utcnow
from mercato.platform.secrets import secret_box
from tests.harness import USER_PASSWORD, Stack, admin, embedded_settings, register_user, stack

SERVICES = ["accounts", "identity"]


async def stored_pems(s: Stack) -> list[str]:
    async with s.platform.databases["identity"].read() as conn:
        return [pem for (pem,) in await conn.execute(select(signing_keys.c.private_pem)) if pem]


async def test_private_keys_are_encrypted_with_the_passphrase(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERCATO_IDENTITY_KEY_PASSPHRASE", "a long passphrase for the keys")
    settings = embedded_settings(data_dir)
    async with stack(settings, SERVICES) as s:
        [pem] = await stored_pems(s)
        # Sealed with the key-encryption key around the passphrase-encrypted PKCS#8.
        assert pem.startswith("fernet:")
        opened = secret_box(settings).open(pem)
        assert opened.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        token = (await admin(s)).headers
    async with stack(settings, SERVICES) as s:  # the same key, decrypted again after a restart
        assert (await s.client.get("/api/v1/auth/me", headers=token)).status_code == 200
    monkeypatch.delenv("MERCATO_IDENTITY_KEY_PASSPHRASE")
    with pytest.raises(KeysUnavailable, match="PASSPHRASE"):
        async with stack(settings, SERVICES):
            pass


async def test_eddsa_signing_is_a_setting(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERCATO_IDENTITY_SIGNING_ALG", "EdDSA")
    async with stack(embedded_settings(data_dir), SERVICES) as s:
        boss = await admin(s)
        token = boss.headers["Authorization"].split()[1]
        assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
        assert (await s.client.get("/api/v1/auth/me", headers=boss.headers)).status_code == 200
        [key] = (await s.client.get("/.well-known/jwks.json")).json()["keys"]
        assert key["kty"] == "OKP" and key["crv"] == "Ed25519"


async def test_remember_me_lengthens_the_refresh_lifetime(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), SERVICES) as s:
        await register_user(s, "jane")
        lifetimes = []
        for remember in (False, True):
            answer = await s.client.post(
                "/api/v1/auth/login",
                json={
                    "username_or_email": "jane",
                    "password": USER_PASSWORD,
                    "remember_me": remember,
                },
            )
            assert answer.status_code == 200
            async with s.platform.databases["identity"].read() as conn:
                newest = (
                    await conn.execute(
                        select(refresh_tokens.c.expires_at)
                        .order_by(refresh_tokens.c.issued_at.desc())
                        .limit(1)
                    )
                ).scalar_one()
            lifetimes.append(newest - utcnow())
        assert timedelta(days=13, hours=23) < lifetimes[0] <= timedelta(days=14)
        assert timedelta(days=29, hours=23) < lifetimes[1] <= timedelta(days=30)
        # A refresh keeps the session's choice.
        rotated = await s.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": answer.json()["refresh_token"]}
        )
        assert rotated.status_code == 200
