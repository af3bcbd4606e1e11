"""A person's earlier tokens stop working the moment accounts answers a change of their roles,
password or status (disabled), or their deletion (issue 11 item 3), on the embedded backend
(SQLite, in-memory store) and the distributed one (PostgreSQL, RabbitMQ, Redis; a second
replica shares the store).

Identity's consumer of `user.*` events is held shut where a test says so: the refusal must then
come from the cut-off accounts itself wrote before answering, not from identity applying the
event a moment later. Identity's durable copy of the cut-off brings it back after a restart and
after the shared store lost its keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from mercato.accounts.contracts import UserDeleted, UserUpdated
from mercato.identity.module import MODULE
from mercato.identity.tables import revoked_subjects
from mercato.platform.auth import MemoryRevocationStore, RedisRevocationStore, RevocationStore
from mercato.platform.auth.revocation import cut_off_subject
from mercato.platform.clock import utcnow
from mercato.platform.settings import Settings
from mercato.platform.uow import UnitOfWork
from tests.harness import (
    USER_PASSWORD,
    Stack,
    admin,
    eventually,
    identity_version,
    register_user,
    stack,
)

NEW_PASSWORD = "Brand-New-Pass-7"
ADMIN_LIST = "/api/v1/admin/accounts"
ADMIN_CLIENT = {"client_id": "escalator", "name": "escalator", "scopes": ["mercato.admin"]}


class Gate:
    """Holds identity's handling of `user.updated` / `user.deleted` while shut."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.opened.set()

    def shut(self) -> None:
        """From now on identity waits before applying a user change."""
        self.opened.clear()

    def open(self) -> None:
        """Let identity apply what it holds."""
        self.opened.set()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    """Identity's user-change handlers, wrapped so a test can hold them (bound when the stack
    is built, so this runs before)."""
    held = Gate()
    handlers: Any = MODULE.handlers
    for kind in (UserUpdated, UserDeleted):
        real = handlers[kind]

        async def gated(uow: UnitOfWork, event: Any, *, deps: Any, real: Any = real) -> None:
            await held.opened.wait()
            await real(uow, event, deps=deps)

        monkeypatch.setitem(handlers, kind, gated)
    return held


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(s: Stack, username: str, password: str = USER_PASSWORD) -> httpx.Response:
    return await s.client.post(
        "/api/v1/auth/login", json={"username_or_email": username, "password": password}
    )


async def applied(s: Stack, user_id: str, version: int) -> None:
    async def check() -> bool:
        return (await identity_version(s, user_id) or 0) >= version

    await eventually(check, what=f"identity at version {version}")


async def fresh_login(
    s: Stack, user_id: str, version: int, username: str, password: str = USER_PASSWORD
) -> dict[str, Any]:
    """Log in once identity has applied `version`: the login right after a change."""
    await applied(s, user_id, version)
    answer = await login(s, username, password)
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    return tokens


async def set_roles(s: Stack, boss: dict[str, str], user_id: str, roles: list[str]) -> None:
    answer = await s.client.put(
        f"/api/v1/admin/accounts/{user_id}/roles", headers=boss, json={"roles": roles}
    )
    assert answer.status_code == 200 and answer.json()["roles"] == sorted(roles), answer.text


async def stored_cut_off(s: Stack, user_id: str) -> int | None:
    """The cut-off identity recorded in its own table."""
    async with s.platform.databases["identity"].read() as conn:
        row = (
            await conn.execute(
                select(revoked_subjects.c.cut_off).where(revoked_subjects.c.subject == user_id)
            )
        ).first()
    return None if row is None else int(row[0])


async def status(s: Stack, method: str, path: str, headers: dict[str, str], **kw: Any) -> int:
    return (await s.client.request(method, path, headers=headers, **kw)).status_code


def distributed(settings: Settings) -> bool:
    return settings.redis_url is not None


async def flush_prefix(settings: Settings) -> int:
    """Delete every key of this test's prefix (the shared store losing its state)."""
    client = aioredis.from_url(str(settings.redis_url))
    try:
        keys = [k async for k in client.scan_iter(match=f"{settings.redis_prefix}:*")]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


async def test_a_demoted_admin_loses_admin_power_before_the_put_answers(
    backend: Settings, gate: Gate
) -> None:
    async with AsyncExitStack() as stacks:
        s = await stacks.enter_async_context(stack(backend))
        others = []
        if distributed(backend):
            others.append(
                await stacks.enter_async_context(
                    stack(backend, ["accounts", "identity"], role="api")
                )
            )
        boss = (await admin(s)).headers
        jane = await register_user(s, "jane")
        await set_roles(s, boss, jane.id, ["admin", "user"])
        tokens = await fresh_login(s, jane.id, 2, "jane")
        earlier = bearer(tokens["access_token"])
        assert await status(s, "GET", ADMIN_LIST, earlier) == 200

        gate.shut()
        await set_roles(s, boss, jane.id, ["user"])
        assert await identity_version(s, jane.id) == 2  # identity has not applied it
        for replica in [s, *others]:
            assert await status(replica, "GET", ADMIN_LIST, earlier) == 401
            assert await status(replica, "GET", "/api/v1/auth/me", earlier) == 401
            # The attack of the issue: a mercato.admin machine client made with the old token.
            made = await status(
                replica, "POST", "/api/v1/admin/clients", earlier, json=ADMIN_CLIENT
            )
            assert made == 401
        gate.open()

        fresh = bearer((await fresh_login(s, jane.id, 3, "jane"))["access_token"])
        me = await s.client.get("/api/v1/auth/me", headers=fresh)
        assert me.status_code == 200 and me.json()["roles"] == ["user"], me.text
        assert await status(s, "GET", ADMIN_LIST, fresh) == 403
        # The session outlives the demotion; its next token carries the new roles and works.
        renewed = await s.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert renewed.status_code == 200, renewed.text
        again = bearer(renewed.json()["access_token"])
        assert (await s.client.get("/api/v1/auth/me", headers=again)).json()["roles"] == ["user"]
        assert await status(s, "GET", ADMIN_LIST, earlier) == 401
        assert await stored_cut_off(s, jane.id) is not None


async def test_a_password_change_and_a_deletion_refuse_earlier_tokens_at_once(
    backend: Settings, gate: Gate
) -> None:
    async with stack(backend) as s:
        jane = await register_user(s, "jane")
        gate.shut()
        changed = await s.client.patch(
            "/api/v1/accounts/me",
            headers=jane.headers,
            json={"password": NEW_PASSWORD, "current_password": USER_PASSWORD},
        )
        assert changed.status_code == 200, changed.text
        assert await identity_version(s, jane.id) == 1
        assert await status(s, "GET", "/api/v1/accounts/me", jane.headers) == 401
        assert await status(s, "GET", "/api/v1/auth/me", jane.headers) == 401
        gate.open()

        fresh = bearer((await fresh_login(s, jane.id, 2, "jane", NEW_PASSWORD))["access_token"])
        assert await status(s, "GET", "/api/v1/accounts/me", fresh) == 200

        gate.shut()
        assert await status(s, "DELETE", "/api/v1/accounts/me", fresh) == 204
        assert await status(s, "GET", "/api/v1/auth/me", fresh) == 401
        assert await status(s, "GET", "/api/v1/wallet/balance", fresh) == 401
        gate.open()
        await applied(s, jane.id, 3)
        assert await status(s, "GET", "/api/v1/auth/me", fresh) == 401
        assert (await login(s, "jane", NEW_PASSWORD)).status_code == 401


async def test_identity_signs_nothing_from_a_replica_older_than_the_cut_off(
    backend: Settings,
) -> None:
    async with stack(backend, ["accounts", "identity"]) as s:
        jane = await register_user(s, "jane")
        tokens = (await login(s, "jane")).json()
        # What accounts writes for a change identity has not applied yet.
        await cut_off_subject(s.platform.shared.revocations, jane.id, utcnow())
        assert await status(s, "GET", "/api/v1/auth/me", jane.headers) == 401
        refused = await login(s, "jane")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
        renewed = await s.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert renewed.status_code == 503, renewed.text


async def test_the_cut_off_comes_back_after_a_restart_and_a_flushed_store(
    backend: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERCATO_IDENTITY_REVOCATION_CHECK_SECONDS", "0.2")
    async with stack(backend) as s:
        boss = (await admin(s)).headers
        jane = await register_user(s, "jane")
        await set_roles(s, boss, jane.id, ["admin", "user"])
        earlier = bearer((await fresh_login(s, jane.id, 2, "jane"))["access_token"])
        await set_roles(s, boss, jane.id, ["user"])
        await applied(s, jane.id, 3)
        assert await stored_cut_off(s, jane.id) is not None
        if distributed(backend):
            assert await flush_prefix(backend) > 0
            store = s.platform.shared.revocations

            async def restored() -> bool:
                return await store.subject_cut_off(jane.id) is not None

            await eventually(restored, what="the keeper restores the cut-off")
            assert await status(s, "GET", ADMIN_LIST, earlier) == 401
    if distributed(backend):
        await flush_prefix(backend)  # the restart finds the shared store empty too
    async with stack(backend) as s:
        assert await status(s, "GET", ADMIN_LIST, earlier) == 401
        assert await status(s, "GET", "/api/v1/auth/me", earlier) == 401
        fresh = bearer((await fresh_login(s, jane.id, 3, "jane"))["access_token"])
        assert await status(s, "GET", "/api/v1/auth/me", fresh) == 200


# --- the stores themselves -------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RevocationStore]:
    if request.param == "memory":
        yield MemoryRevocationStore()
        return
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    client = aioredis.from_url(url)
    yield RedisRevocationStore(client, f"{prefix}:revoked")
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_a_cut_off_refuses_its_own_second_and_is_never_lowered(
    store: RevocationStore,
) -> None:
    second = int(time.time())
    until = second + 900
    await store.revoke_subject("jane", second * 1000 + 250, until)
    # An older change applied late (identity behind accounts) does not reopen anything.
    await store.revoke_subject("jane", second * 1000 - 5000, until)
    assert await store.subject_cut_off("jane") == second * 1000 + 250
    # `iat` of the cut-off's own second may be before it: refused; the next second is after.
    assert await store.refuses("j1", "web", second, "jane")
    assert await store.refuses("j1", "web", second - 1, "jane")
    assert not await store.refuses("j1", "web", second + 1, "jane")
    assert not await store.refuses("j1", "web", second - 1, "john")
    # A cut-off on a whole second lets that second's tokens through (all are at or after it).
    await store.revoke_subject("john", second * 1000, until)
    assert not await store.refuses("j1", "web", second, "john")
    assert await store.refuses("j1", "web", second - 1, "john")
    # A machine's token names no subject: persons' cut-offs do not touch it.
    assert not await store.refuses("j1", "jane", second - 1)


async def set_status(s: Stack, boss: dict[str, str], user_id: str, to: str) -> dict[str, Any]:
    answer = await s.client.put(
        f"/api/v1/admin/accounts/{user_id}/status", headers=boss, json={"status": to}
    )
    assert answer.status_code == 200 and answer.json()["status"] == to, answer.text
    profile: dict[str, Any] = answer.json()
    return profile


async def test_a_disabled_person_is_refused_at_once_and_an_enabled_one_logs_in_again(
    backend: Settings, gate: Gate
) -> None:
    async with stack(backend) as s:
        boss = (await admin(s)).headers
        jane = await register_user(s, "jane")
        tokens = (await login(s, "jane")).json()
        path = f"/api/v1/admin/accounts/{jane.id}/status"
        for wrong in ({"status": "deleted"}, {"status": None}, {}, {"status": "active", "x": 1}):
            refused = await s.client.put(path, headers=boss, json=wrong)
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
        unknown = "/api/v1/admin/accounts/no-such-id/status"
        assert await status(s, "PUT", unknown, boss, json={"status": "disabled"}) == 404
        assert await status(s, "PUT", path, jane.headers, json={"status": "disabled"}) == 403

        gate.shut()
        disabled = await set_status(s, boss, jane.id, "disabled")
        assert await identity_version(s, jane.id) == 1  # identity has not applied it
        assert await status(s, "GET", "/api/v1/auth/me", jane.headers) == 401
        assert await status(s, "GET", "/api/v1/accounts/me", jane.headers) == 401
        gate.open()
        await applied(s, jane.id, 2)
        assert (await login(s, "jane")).status_code == 401
        renewed = await s.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert renewed.status_code == 401, renewed.text
        # Disabling a disabled account changes nothing: same version, no new event.
        again = await set_status(s, boss, jane.id, "disabled")
        assert again["updated_at"] == disabled["updated_at"]

        await set_status(s, boss, jane.id, "active")
        fresh = bearer((await fresh_login(s, jane.id, 3, "jane"))["access_token"])
        assert await status(s, "GET", "/api/v1/auth/me", fresh) == 200
        assert await status(s, "GET", "/api/v1/auth/me", jane.headers) == 401
