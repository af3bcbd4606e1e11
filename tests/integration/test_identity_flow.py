"""Seed 004 over HTTP on both backends: registration → events → authentication, changes in
accounts reaching identity, and each service working while the other is down."""

from __future__ import annotations

import httpx

from mercato.platform.events.admin import event_stats
from mercato.platform.settings import Settings
from tests.harness import (
    USER_PASSWORD,
    Stack,
    eventually,
    identity_knows,
    identity_version,
    register_user,
    stack,
)

BOTH = ["accounts", "identity"]
NEW_PASSWORD = "Another-Horse-42"


async def login(s: Stack, who: str, password: str = USER_PASSWORD) -> httpx.Response:
    return await s.client.post(
        "/api/v1/auth/login", json={"username_or_email": who, "password": password}
    )


async def applied(s: Stack, user_id: str, version: int) -> None:
    async def check() -> bool:
        return (await identity_version(s, user_id) or 0) >= version

    await eventually(check, what=f"identity at version {version}")


async def test_changes_in_accounts_change_what_identity_accepts(backend: Settings) -> None:
    async with stack(backend, BOTH) as s:
        jane = await register_user(s, "jane")
        assert (await login(s, "JANE@example.COM")).status_code == 200  # e-mail, any case
        first = (await login(s, "jane")).json()

        patch = {"username": "janet", "current_password": USER_PASSWORD}
        answer = await s.client.patch("/api/v1/accounts/me", headers=jane.headers, json=patch)
        assert answer.status_code == 200
        await applied(s, jane.id, 2)
        assert (await login(s, "jane")).status_code == 401
        assert (await login(s, "janet")).status_code == 200

        patch = {"email": "new@example.com", "current_password": USER_PASSWORD}
        await s.client.patch("/api/v1/accounts/me", headers=jane.headers, json=patch)
        await applied(s, jane.id, 3)
        assert (await login(s, "jane@example.com")).status_code == 401
        assert (await login(s, "new@example.com")).status_code == 200

        patch = {"password": NEW_PASSWORD, "current_password": USER_PASSWORD}
        await s.client.patch("/api/v1/accounts/me", headers=jane.headers, json=patch)
        await applied(s, jane.id, 4)
        assert (await login(s, "janet")).status_code == 401
        fresh = await login(s, "janet", NEW_PASSWORD)
        assert fresh.status_code == 200
        # The password change ended the sessions opened with the old one.
        old_refresh = {"refresh_token": first["refresh_token"]}
        assert (await s.client.post("/api/v1/auth/refresh", json=old_refresh)).status_code == 401
        old_bearer = {"Authorization": f"Bearer {first['access_token']}"}
        assert (await s.client.get("/api/v1/auth/me", headers=old_bearer)).status_code == 401

        headers = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
        assert (await s.client.delete("/api/v1/accounts/me", headers=headers)).status_code == 204
        await applied(s, jane.id, 5)
        assert (await login(s, "janet", NEW_PASSWORD)).status_code == 401
        assert (await s.client.get("/api/v1/auth/me", headers=headers)).status_code == 401


async def test_registration_works_while_identity_is_down(backend: Settings) -> None:
    # Identity is absent: accounts still registers, and the events wait for identity.
    async with stack(backend, ["accounts"]) as s:
        form = {
            "username": "bob",
            "email": "bob@example.com",
            "password": USER_PASSWORD,
            "confirm_password": USER_PASSWORD,
        }
        assert (await s.client.post("/api/v1/accounts/register", json=form)).status_code == 201

        async def relayed() -> bool:
            return (await event_stats(s.platform.databases["accounts"])).outbox_backlog == 0

        # Published while identity is absent (not merely left in the outbox).
        await eventually(relayed, what="accounts' outbox relayed")
    # Identity starts on the same databases/broker: the backlog is applied, bob can log in.
    async with stack(backend, BOTH) as s:
        await eventually(lambda: identity_knows(s, "bob"), what="backlog applied")
        assert (await login(s, "bob")).status_code == 200


async def test_login_and_refresh_work_while_accounts_is_down(backend: Settings) -> None:
    async with stack(backend, BOTH) as s:
        await register_user(s, "carol")
    async with stack(backend, ["identity"]) as s:
        answer = await login(s, "carol")
        assert answer.status_code == 200
        refreshed = await s.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": answer.json()["refresh_token"]}
        )
        assert refreshed.status_code == 200
        assert (await s.client.post("/api/v1/accounts/register", json={})).status_code == 404
