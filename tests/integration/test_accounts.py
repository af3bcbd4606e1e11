"""Accounts over HTTP on both backends: registration rules, events in the outbox, bootstrap."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from mercato.platform.events.tables import outbox
from mercato.platform.settings import Settings
from tests.harness import (
    USER_PASSWORD,
    Stack,
    admin,
    caller_token,
    embedded_settings,
    eventually,
    register_user,
    stack,
)

FORM = {
    "username": "jane",
    "email": "Jane@Example.com",
    "password": "Correct-Horse-9",
    "confirm_password": "Correct-Horse-9",
    "display_name": "Jane",
}


async def events_of(s: Stack, event_type: str) -> list[dict[str, object]]:
    async with s.platform.databases["accounts"].read() as conn:
        rows = await conn.execute(
            select(outbox.c.envelope).where(outbox.c.event_type == event_type)
        )
        return [json.loads(raw) for (raw,) in rows]


async def test_register_emits_user_created_with_the_hash_never_the_password(
    backend: Settings,
) -> None:
    async with stack(backend, ["accounts"]) as s:
        answer = await s.client.post("/api/v1/accounts/register", json=FORM)
        assert answer.status_code == 201, answer.text
        profile = answer.json()
        assert profile["username"] == "jane" and profile["roles"] == ["user"]
        assert "password" not in answer.text and "hash" not in answer.text
        [event] = [e for e in await events_of(s, "user.created") if e["subject"] == profile["id"]]
        assert event["data"]["password_hash"].startswith("$argon2id$")
        assert FORM["password"] not in json.dumps(event)
        assert event["data"]["version"] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [({"username": "JANE"}, "username"), ({"email": "jane@EXAMPLE.COM"}, "email")],
)
async def test_taken_username_or_email_is_409_whatever_the_case(
    backend: Settings, change: dict[str, str], field: str
) -> None:
    async with stack(backend, ["accounts"]) as s:
        assert (await s.client.post("/api/v1/accounts/register", json=FORM)).status_code == 201
        other = {**FORM, "username": "other", "email": "other@example.com", **change}
        answer = await s.client.post("/api/v1/accounts/register", json=other)
        assert answer.status_code == 409
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["errors"][0]["loc"] == ["body", field]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"confirm_password": "Something-else-1"}, "confirm_password"),
        ({"password": "short", "confirm_password": "short"}, "password"),
        ({"password": "alllowercase", "confirm_password": "alllowercase"}, "password"),
        ({"email": "nope"}, "email"),
        ({"username": "a b"}, "username"),
        ({"username": 12345}, "username"),
        ({"extra": "field"}, "extra"),
    ],
)
async def test_bad_registrations_are_422_naming_the_field(
    data_dir: Path, change: dict[str, object], field: str
) -> None:
    async with stack(embedded_settings(data_dir), ["accounts"]) as s:
        answer = await s.client.post("/api/v1/accounts/register", json={**FORM, **change})
        assert answer.status_code == 422, answer.text
        body = answer.json()
        assert body["status"] == 422
        assert field in [e["loc"][-1] for e in body["errors"]]
        assert "Something-else-1" not in answer.text  # passwords are never echoed


async def test_unicode_usernames_register_and_collide_by_case(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), ["accounts"]) as s:
        form = {**FORM, "username": "Ärger_Öl", "email": "u@example.com"}
        answer = await s.client.post("/api/v1/accounts/register", json=form)
        assert answer.status_code == 201, answer.text
        again = {**form, "username": "äRGER_öL", "email": "v@example.com"}
        assert (await s.client.post("/api/v1/accounts/register", json=again)).status_code == 409


async def test_generated_admin_is_provisioned_once_with_a_private_credentials_file(
    data_dir: Path,
) -> None:
    settings = Settings(data_dir=data_dir)  # no MERCATO_ADMIN_PASSWORD: one is generated
    async with stack(settings, ["accounts"]) as s:
        [created] = await events_of(s, "user.created")
        assert created["data"]["roles"] == ["admin", "user"]
    creds = data_dir / "admin-credentials.txt"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    first = creds.read_text()
    assert "password: " in first
    async with stack(settings, ["accounts"]) as s:
        assert len(await events_of(s, "user.created")) == 1
    assert creds.read_text() == first


async def test_profile_read_update_delete_emit_versioned_events(backend: Settings) -> None:
    async with stack(backend, ["accounts"]) as s:
        jane = await register_user(s, "jane")
        me = await s.client.get("/api/v1/accounts/me", headers=jane.headers)
        assert me.status_code == 200 and me.json()["email"] == "jane@example.com"
        patched = await s.client.patch(
            "/api/v1/accounts/me",
            headers=jane.headers,
            json={
                "display_name": "J",
                "email": "JANE2@example.com",
                "current_password": USER_PASSWORD,
            },
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["email"] == "JANE2@example.com"
        no_current = await s.client.patch(
            "/api/v1/accounts/me", headers=jane.headers, json={"password": "New-Password-77"}
        )
        assert no_current.status_code == 422
        assert no_current.json()["errors"][0]["loc"] == ["body", "current_password"]
        changed = await s.client.patch(
            "/api/v1/accounts/me",
            headers=jane.headers,
            json={"password": "New-Password-77", "current_password": USER_PASSWORD},
        )
        assert changed.status_code == 200
        updates = [e for e in await events_of(s, "user.updated") if e["subject"] == jane.id]
        assert [u["data"]["version"] for u in updates] == [2, 3]
        assert [u["data"]["changed"] for u in updates] == [["display_name", "email"], ["password"]]
        # The password change refused the earlier token at once; one issued after it works (from
        # the second after the change on: `iat` is whole seconds).
        assert (await s.client.get("/api/v1/accounts/me", headers=jane.headers)).status_code == 401
        fresh: dict[str, str] = {}

        async def fresh_token_works() -> bool:
            token = await caller_token(s, "jane", "New-Password-77", sub=jane.id, roles=["user"])
            fresh["Authorization"] = f"Bearer {token}"
            return (await s.client.get("/api/v1/accounts/me", headers=fresh)).status_code == 200

        await eventually(fresh_token_works, what="a token issued after the change works")
        assert (await s.client.delete("/api/v1/accounts/me", headers=fresh)).status_code == 204
        [deleted] = await events_of(s, "user.deleted")
        assert deleted["data"] == {**deleted["data"], "user_id": jane.id, "version": 4}
        # Deleting the account ended its tokens too.
        assert (await s.client.get("/api/v1/accounts/me", headers=fresh)).status_code == 401


async def test_admin_lists_accounts_and_sets_roles(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), ["accounts"]) as s:
        boss = await admin(s)
        jane = await register_user(s, "jane")
        assert (
            await s.client.get("/api/v1/admin/accounts", headers=jane.headers)
        ).status_code == 403
        assert (await s.client.get("/api/v1/admin/accounts")).status_code == 401
        listed = await s.client.get("/api/v1/admin/accounts?limit=1", headers=boss.headers)
        assert listed.status_code == 200
        assert listed.json()["total"] == 2 and len(listed.json()["items"]) == 1
        roles = await s.client.put(
            f"/api/v1/admin/accounts/{jane.id}/roles",
            headers=boss.headers,
            json={"roles": ["admin"]},
        )
        assert roles.status_code == 200 and roles.json()["roles"] == ["admin", "user"]
        bad = await s.client.put(
            f"/api/v1/admin/accounts/{jane.id}/roles", headers=boss.headers, json={"roles": ["god"]}
        )
        assert bad.status_code == 422
        missing = await s.client.put(
            "/api/v1/admin/accounts/nope/roles", headers=boss.headers, json={"roles": []}
        )
        assert missing.status_code == 404
