"""Accounts' input hardening (issue 11, items 8 and 11) on both backends: look-alike usernames
(TR39 mixed-script and skeleton rules, enforced by a unique index and backfilled by a
migration) and re-authentication with a throttled `current_password` on profile changes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import IntegrityError

from mercato.accounts.domain import User, username_skeleton
from mercato.accounts.module import MODULE
from mercato.accounts.store import Taken, UserRepository, users
from mercato.platform.db import Database
from mercato.platform.migrations import upgrade
from mercato.platform.settings import Settings
from tests.harness import USER_PASSWORD, Stack, register_user, stack

CYRILLIC_A = "\u0430"
ME = "/api/v1/accounts/me"


async def register(s: Stack, username: str, email: str | None = None) -> Any:
    """POST a registration form for `username`."""
    return await s.client.post(
        "/api/v1/accounts/register",
        json={
            "username": username,
            "email": email or f"u{abs(hash(username))}@example.com",
            "password": USER_PASSWORD,
            "confirm_password": USER_PASSWORD,
        },
    )


async def test_look_alike_and_mixed_script_usernames_are_refused(backend: Settings) -> None:
    async with stack(backend, ["accounts"]) as s:  # the bootstrap admin is `admin`
        mixed = await register(s, f"{CYRILLIC_A}dmin")
        assert mixed.status_code == 422, mixed.text
        assert mixed.json()["errors"][0]["loc"] == ["body", "username"]
        assert "scripts" in mixed.json()["detail"]
        for look_alike in ("adrnin", "ADMIN", "\uff41dmin", "ADRNIN"):  # rn≈m, full-width a
            answer = await register(s, look_alike)
            assert answer.status_code == 409, (look_alike, answer.text)
            assert answer.json()["errors"][0]["loc"] == ["body", "username"]
        # One script, not Latin, registers; its Latin look-alike then does not.
        greek = await register(s, "Ψυχή")
        assert greek.status_code == 201, greek.text
        assert greek.json()["username"] == "Ψυχή"
        assert (await register(s, "ace")).status_code == 201
        all_cyrillic = await register(s, "\u0430\u0441\u0435")  # all Cyrillic, looks like ace
        assert all_cyrillic.status_code == 409, all_cyrillic.text
        assert "looks like" in all_cyrillic.json()["detail"]
        # Latin with Han is one writing system (TR39 "highly restrictive"): accepted.
        assert (await register(s, "東京tokyo")).status_code == 201


async def test_concurrent_look_alike_registrations_cannot_both_succeed(backend: Settings) -> None:
    async with stack(backend, ["accounts"]) as s:
        names = ["mary", "rnary", "MARY", "rnAry", "Mary", "maRy"]  # one skeleton: "rnary"
        answers = await asyncio.gather(
            *(register(s, name, f"m{i}@example.com") for i, name in enumerate(names))
        )
        assert sorted(a.status_code for a in answers) == [201] + [409] * (len(names) - 1)


async def test_the_unique_index_refuses_a_look_alike_the_checks_missed(
    database_url: str,
) -> None:
    database = Database("accounts", database_url)
    try:
        await upgrade(database, [MODULE.migrations] if MODULE.migrations else [])
        now = datetime.now(UTC)
        first = _user("u1", "mary", now)
        async with database.transaction() as conn:
            await UserRepository(conn).add(first)
        # Straight to the table, past the repository's own look-up: the index decides.
        with pytest.raises(IntegrityError):
            async with database.transaction() as conn:
                row = {**_plain_row(_user("u2", "rnary", now))}
                await conn.execute(users.insert().values(**row))
    finally:
        await database.dispose()


async def test_migration_backfills_skeletons_and_keeps_old_look_alikes(
    database_url: str,
) -> None:
    assert MODULE.migrations is not None
    history = MODULE.migrations
    database = Database("accounts", database_url)
    try:
        await database.ensure_schema()

        def to_0001(conn: Connection) -> None:
            config = Config()
            config.set_main_option("script_location", str(history.path))
            config.attributes.update(
                connection=conn, version_table=history.version_table, schema=database.schema
            )
            command.upgrade(config, "accounts_0001")

        async with database.engine.begin() as conn:
            await conn.run_sync(to_0001)
        async with database.transaction() as conn:
            for i, name in enumerate(["admin", f"{CYRILLIC_A}dmin", "jane"]):
                await conn.execute(
                    text(
                        "INSERT INTO users (id, username, username_key, email, email_key,"
                        " password_hash, roles, status, version, created_at, updated_at)"
                        " VALUES (:id, :n, :n, :e, :e, 'x', '[\"user\"]', 'active', 1, :t, :t)"
                    ),
                    {"id": f"u{i}", "n": name, "e": f"{i}@x.org", "t": datetime(2026, 1, 1 + i)},
                )
        await upgrade(database, [history])
        async with database.read() as conn:
            found = await conn.execute(select(users.c.id, users.c.username_skeleton))
            rows = {user_id: skeleton for user_id, skeleton in found}
        # The oldest holder keeps the skeleton; the older look-alike keeps its name, no claim.
        assert rows == {"u0": username_skeleton("admin"), "u1": None, "u2": "jane"}
        async with database.transaction() as conn:
            with pytest.raises(Taken):
                await UserRepository(conn).add(_user("u9", "adrnin", datetime.now(UTC)))
    finally:
        await database.dispose()


def _user(user_id: str, username: str, now: datetime) -> User:
    return User(
        id=user_id,
        username=username,
        email=f"{user_id}@example.com",
        display_name=None,
        password_hash="x",
        roles=["user"],
        status="active",
        version=1,
        created_at=now,
        updated_at=now,
        username_skeleton=username_skeleton(username),
    )


def _plain_row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "username_key": user.username_key,
        "email": user.email,
        "email_key": user.email_key,
        "display_name": None,
        "password_hash": "x",
        "roles": '["user"]',
        "status": "active",
        "version": 1,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "username_skeleton": user.username_skeleton,
    }


async def test_sign_in_changes_need_the_current_password(backend: Settings) -> None:
    async with stack(backend, ["accounts"]) as s:
        jane = await register_user(s, "jane")
        await register_user(s, "mary")
        for change in (
            {"email": "jane2@example.com"},
            {"username": "janet"},
            {"password": "New-Password-77"},
        ):
            missing = await s.client.patch(ME, headers=jane.headers, json=change)
            assert missing.status_code == 422, (change, missing.text)
            assert missing.json()["errors"][0]["loc"] == ["body", "current_password"]
            wrong = await s.client.patch(
                ME, headers=jane.headers, json={**change, "current_password": "Wrong-Pass-99"}
            )
            assert wrong.status_code == 401, (change, wrong.text)
            assert wrong.json()["type"].endswith("/wrong-current-password")
            assert "Wrong-Pass-99" not in wrong.text
        # A display name, or the e-mail the account already has, needs no password.
        free = {"display_name": "Jane D", "email": "jane@example.com", "username": "jane"}
        assert (await s.client.patch(ME, headers=jane.headers, json=free)).status_code == 200
        renamed = await s.client.patch(
            ME, headers=jane.headers, json={"username": "janet", "current_password": USER_PASSWORD}
        )
        assert renamed.status_code == 200 and renamed.json()["username"] == "janet"
        # A rename is held to the look-alike rules too.
        for name, status in (("rnary", 409), (f"j{CYRILLIC_A}net", 422)):
            answer = await s.client.patch(
                ME, headers=jane.headers, json={"username": name, "current_password": USER_PASSWORD}
            )
            assert answer.status_code == status, (name, answer.text)
        me = await s.client.get(ME, headers=jane.headers)
        assert me.json()["username"] == "janet" and me.json()["display_name"] == "Jane D"


async def test_wrong_current_passwords_are_throttled_per_account(
    backend: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERCATO_ACCOUNTS_PASSWORD_FREE_FAILURES", "3")
    monkeypatch.setenv("MERCATO_ACCOUNTS_PASSWORD_BASE_DELAY_SECONDS", "600")
    async with stack(backend, ["accounts"]) as s:
        jane = await register_user(s, "jane")
        mary = await register_user(s, "mary")
        guess = {"email": "mine@example.com", "current_password": "Guess-Number-1"}
        # Concurrent guesses: the 3 free ones and the one that locks are checked, no more.
        answers = await asyncio.gather(
            *(s.client.patch(ME, headers=jane.headers, json=guess) for _ in range(12))
        )
        assert sorted(a.status_code for a in answers) == [401] * 4 + [429] * 8
        right = {"email": "mine@example.com", "current_password": USER_PASSWORD}
        locked = await s.client.patch(ME, headers=jane.headers, json=right)
        assert locked.status_code == 429, locked.text
        assert 500 < int(locked.headers["Retry-After"]) <= 600
        assert locked.headers["content-type"] == "application/problem+json"
        # Display names need no password, so the lock does not stop them; nor other accounts.
        named = await s.client.patch(ME, headers=jane.headers, json={"display_name": "J"})
        assert named.status_code == 200
        theirs = await s.client.patch(
            ME,
            headers=mary.headers,
            json={"email": "m2@example.com", "current_password": USER_PASSWORD},
        )
        assert theirs.status_code == 200, theirs.text
        # A right answer within the free ones forgets the earlier wrong ones.
        for _ in range(2):
            bad = {"display_name": "M", "password": "New-Password-77", "current_password": "no"}
            assert (await s.client.patch(ME, headers=mary.headers, json=bad)).status_code == 401
        fine = {"email": "m3@example.com", "current_password": USER_PASSWORD}
        assert (await s.client.patch(ME, headers=mary.headers, json=fine)).status_code == 200
        for _ in range(3):
            bad = {"email": "m4@example.com", "current_password": "no"}
            assert (await s.client.patch(ME, headers=mary.headers, json=bad)).status_code == 401
