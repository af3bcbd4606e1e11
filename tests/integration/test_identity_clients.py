"""Client management, token budgets, key rotation and first-start provisioning of identity."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from mercato.identity.contracts import (
    EXPORTER_CLIENT_ID,
    ExporterCredentials,
    ExporterHandover,
)
from mercato.platform.settings import Settings
from tests.harness import Stack, admin, embedded_settings, stack

TOKEN = "/oauth/token"
CC = {"grant_type": "client_credentials"}
SERVICES = ["accounts", "identity"]


async def new_client(s: Stack, client_id: str = "robot", **fields: object) -> str:
    boss = await admin(s)
    body = {"client_id": client_id, "name": client_id, "scopes": ["catalog.read"], **fields}
    made = await s.client.post("/api/v1/admin/clients", headers=boss.headers, json=body)
    assert made.status_code == 201, made.text
    return str(made.json()["client_secret"])


async def client_token(s: Stack, client_id: str, secret: str) -> str:
    answer = await s.client.post(TOKEN, data=CC, auth=(client_id, secret))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_admin_registers_lists_and_deletes_clients(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), SERVICES) as s:
        boss = await admin(s)
        secret = await new_client(s, token_budget_per_hour=10)
        assert len(secret) >= 43
        listed = await s.client.get("/api/v1/admin/clients", headers=boss.headers)
        assert listed.status_code == 200
        assert secret not in listed.text and "secret" not in listed.text
        ids = [c["client_id"] for c in listed.json()["items"]]
        assert ids == [EXPORTER_CLIENT_ID, "robot"] and listed.json()["total"] == 2
        again = await s.client.post(
            "/api/v1/admin/clients",
            headers=boss.headers,
            json={"client_id": "robot", "name": "dup", "scopes": []},
        )
        assert again.status_code == 409
        generated = await s.client.post(
            "/api/v1/admin/clients", headers=boss.headers, json={"name": "anon", "scopes": []}
        )
        assert generated.status_code == 201 and generated.json()["client_id"].startswith("client-")
        token = await client_token(s, "robot", secret)
        gone = await s.client.delete("/api/v1/admin/clients/robot", headers=boss.headers)
        assert gone.status_code == 204
        assert (await s.client.post(TOKEN, data=CC, auth=("robot", secret))).status_code == 401
        assert (
            await s.client.delete("/api/v1/admin/clients/robot", headers=boss.headers)
        ).status_code == 404
        # Tokens it was issued before are refused at once (see the next test).
        me = await s.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 401


async def test_deleting_a_client_refuses_its_tokens_everywhere_and_after_restart(
    backend: Settings,
) -> None:
    services = ["accounts", "identity", "catalog"]
    async with stack(backend, services) as s:
        boss = await admin(s)
        robot = bearer(await client_token(s, "robot", await new_client(s)))
        other = bearer(await client_token(s, "other", await new_client(s, "other")))
        assert (await s.client.get("/api/v1/products/export", headers=robot)).status_code == 200
        gone = await s.client.delete("/api/v1/admin/clients/robot", headers=boss.headers)
        assert gone.status_code == 204
        refused = await s.client.get("/api/v1/products/export", headers=robot)
        assert refused.status_code == 401 and refused.json()["detail"] == "token revoked"
        # Another client's token, and the admin's, are untouched.
        assert (await s.client.get("/api/v1/products/export", headers=other)).status_code == 200
        assert (await s.client.get("/api/v1/auth/me", headers=boss.headers)).status_code == 200
        # A client registered again under the same id gets tokens that work (`iat` has
        # one-second resolution and the cut-off is the deletion's second).
        await asyncio.sleep(1.1)
        fresh = bearer(await client_token(s, "robot", await new_client(s)))
        assert (await s.client.get("/api/v1/products/export", headers=fresh)).status_code == 200
    # A restart (embedded: a new process's memory store) still refuses the old token.
    async with stack(backend, services) as s:
        assert (await s.client.get("/api/v1/products/export", headers=robot)).status_code == 401
        assert (await s.client.get("/api/v1/products/export", headers=fresh)).status_code == 200


async def test_token_budget_answers_429_with_retry_after_and_survives_restart(
    backend: Settings,
) -> None:
    async with stack(backend, SERVICES) as s:
        secret = await new_client(s, token_budget_per_hour=2)
        unlimited = await new_client(s, "free")
        for _ in range(2):
            await client_token(s, "robot", secret)
        spent = await s.client.post(TOKEN, data=CC, auth=("robot", secret))
        assert spent.status_code == 429
        assert spent.json()["error"] == "slow_down" and "error_description" in spent.json()
        assert 3500 <= int(spent.headers["retry-after"]) <= 3600
        for _ in range(5):  # no budget set: unlimited
            await client_token(s, "free", unlimited)
    async with stack(backend, SERVICES) as s:
        again = await s.client.post(TOKEN, data=CC, auth=("robot", secret))
        assert again.status_code == 429 and int(again.headers["retry-after"]) > 0


async def test_rotation_keeps_tokens_of_the_previous_key_valid(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), SERVICES) as s:
        boss = await admin(s)
        secret = await new_client(s)
        before = await client_token(s, "robot", secret)
        rotated = await s.client.post("/api/v1/admin/keys/rotate", headers=boss.headers)
        assert rotated.status_code == 200
        new_kid = rotated.json()["kid"]
        after = await client_token(s, "robot", secret)
        assert jwt.get_unverified_header(after)["kid"] == new_kid
        assert jwt.get_unverified_header(before)["kid"] != new_kid
        kids = [k["kid"] for k in (await s.client.get("/.well-known/jwks.json")).json()["keys"]]
        assert new_kid in kids and jwt.get_unverified_header(before)["kid"] in kids
        for token in (before, after, boss.headers["Authorization"].split()[1]):
            me = await s.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200


async def test_cli_rotation_is_picked_up_by_a_running_identity(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERCATO_IDENTITY_KEY_REFRESH_SECONDS", "0.1")
    async with stack(embedded_settings(data_dir), SERVICES) as s:
        secret = await new_client(s)
        before = await client_token(s, "robot", secret)
        # Off the event loop: the running platform must keep serving (and finish any
        # transaction it holds) while the CLI works on the same database.
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "mercato.cli",
                "identity",
                "rotate-key",
                "--data-dir",
                str(data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "new signing key" in done.stdout
        after = await client_token(s, "robot", secret)
        assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]
        for token in (before, after):
            me = await s.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200


async def test_exporter_client_is_provisioned_once(data_dir: Path) -> None:
    settings = embedded_settings(data_dir)
    async with stack(settings, SERVICES) as s:
        creds = s.platform.shared.handovers.of(ExporterHandover).credentials
        assert isinstance(creds, ExporterCredentials) and creds.client_id == EXPORTER_CLIENT_ID
        assert creds.client_secret not in repr(creds)
        token = await client_token(s, creds.client_id, creds.client_secret)
        assert jwt.decode(token, options={"verify_signature": False})["scope"] == "catalog.read"
    async with stack(settings, SERVICES) as s:
        # The generated secret is not known any more (only its digest is stored), and unchanged.
        assert s.platform.shared.handovers.of(ExporterHandover).credentials is None
        await client_token(s, creds.client_id, creds.client_secret)


async def test_exporter_secret_from_the_environment(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERCATO_EXPORTER_CLIENT_SECRET", "exporter-secret-from-env-0123456789")
    settings = embedded_settings(data_dir)
    for _ in range(2):
        async with stack(settings, SERVICES) as s:
            creds = s.platform.shared.handovers.of(ExporterHandover).credentials
            assert creds is not None
            assert creds.client_secret == "exporter-secret-from-env-0123456789"
            await client_token(s, creds.client_id, creds.client_secret)


async def test_two_replicas_share_one_budget(backend: Settings) -> None:
    async with stack(backend, SERVICES) as first, stack(backend, SERVICES) as second:
        secret = await new_client(first, token_budget_per_hour=3)
        for replica in (first, second, second):
            await client_token(replica, "robot", secret)
        for replica in (first, second):
            answer = await replica.client.post(TOKEN, data=CC, auth=("robot", secret))
            assert answer.status_code == 429, answer.text
