"""Two identity replicas on one database (SQLite and PostgreSQL) agree at once: a rotation made
on one is published by the other's JWKS the moment it answers, a token signed with the new key
verifies on the other, which signs with it within its refresh interval; and a client deleted on
one is refused by the other straight away (replicas do not cache clients)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.fernet import Fernet

from tests.harness import Stack, admin, embedded_settings, stack

CC = {"grant_type": "client_credentials"}


def kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def token(s: Stack, client_id: str, secret: str) -> httpx.Response:
    return await s.client.post("/oauth/token", data=CC, auth=(client_id, secret))


async def test_rotation_and_client_deletion_reach_the_other_replica(
    database_url: str,
    data_dir: Path,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MERCATO_IDENTITY_KEY_REFRESH_SECONDS", "0.5")
    # On SQLite every service keeps its own file in the shared data dir; on PostgreSQL a schema.
    on_pg = database_url.startswith("postgresql")
    databases = {"database_url": database_url} if on_pg else {}
    # Revocations are shared through Redis, as between replicas in distributed mode.
    # One key-encryption key for both, as every replica of an installation shares it.
    settings = embedded_settings(
        data_dir,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        secrets_key=Fernet.generate_key().decode(),
        **databases,
    )
    async with (
        stack(settings, ["accounts", "identity"]) as one,
        stack(settings, ["identity"], role="api") as two,
    ):
        boss = await admin(one)
        made = await one.client.post(
            "/api/v1/admin/clients",
            headers=boss.headers,
            json={"client_id": "robot", "name": "robot", "scopes": ["catalog.read"]},
        )
        assert made.status_code == 201
        secret = made.json()["client_secret"]
        before = (await token(two, "robot", secret)).json()["access_token"]

        rotated = await one.client.post("/api/v1/admin/keys/rotate", headers=boss.headers)
        new_kid = rotated.json()["kid"]
        # The other replica publishes the new key as soon as anyone asks it.
        kids = [k["kid"] for k in (await two.client.get("/.well-known/jwks.json")).json()["keys"]]
        assert new_kid in kids and kid(before) in kids
        after = (await token(one, "robot", secret)).json()["access_token"]
        assert kid(after) == new_kid
        for s in (one, two):
            for t in (before, after):
                me = await s.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {t}"})
                assert me.status_code == 200, me.text
        await asyncio.sleep(0.6)  # past the other replica's refresh interval
        assert kid((await token(two, "robot", secret)).json()["access_token"]) == new_kid
        assert await two.platform.contexts["identity"].deps.keyring.signing_key()

        deleted = await one.client.delete("/api/v1/admin/clients/robot", headers=boss.headers)
        assert deleted.status_code == 204
        refused = await token(two, "robot", secret)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
        for t in (before, after):
            me = await two.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {t}"})
            assert me.status_code == 401
