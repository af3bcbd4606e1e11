"""The credential replica fed user events out of order and twice, on SQLite and PostgreSQL:
the newest version wins, duplicates change nothing, and a name handed from one user to another
never wedges the consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from mercato.accounts.contracts import UserCreated, UserDeleted, UserUpdated
from mercato.identity.module import MODULE
from mercato.platform.clock import utcnow
from mercato.platform.events.envelope import EventPayload, make_envelope
from mercato.platform.passwords import hash_password
from mercato.platform.service import bind_handlers
from mercato.platform.settings import Settings
from tests.harness import Stack, embedded_settings, stack

PASSWORD = "Replica-Pass-42"
T0 = utcnow()


@pytest.fixture
async def s(database_url: str, data_dir: Path) -> AsyncIterator[Stack]:
    # `database_url` runs each test once on SQLite and once on PostgreSQL.
    settings: Settings = embedded_settings(data_dir, database_url=database_url)
    async with stack(settings, ["identity"]) as running:
        yield running


async def deliver(s: Stack, payload: EventPayload, subject: str) -> None:
    """Apply one event through identity's real handler, in its own unit of work."""
    ctx = s.platform.contexts["identity"]
    envelope = make_envelope(payload, source="accounts", subject=subject)
    async with ctx.uow() as uow:
        await bind_handlers(MODULE.handlers, ctx)[envelope.type](envelope, uow)


async def login(s: Stack, who: str) -> int:
    answer = await s.client.post(
        "/api/v1/auth/login", json={"username_or_email": who, "password": PASSWORD}
    )
    return answer.status_code


def state(user_id: str, username: str, version: int, seconds: int, hash_: str) -> UserUpdated:
    return UserUpdated(
        user_id=user_id,
        username=username,
        email=f"{user_id}@example.com",
        roles=["user"],
        password_hash=hash_,
        version=version,
        occurred_at=T0 + timedelta(seconds=seconds),
    )


async def test_out_of_order_and_repeated_events_end_on_the_newest_state(s: Stack) -> None:
    hash_ = await hash_password(PASSWORD)
    created = UserCreated(
        user_id="u1",
        username="first",
        email="u1@example.com",
        roles=["user"],
        password_hash=hash_,
        occurred_at=T0,
    )
    v2, v3 = state("u1", "second", 2, 2, hash_), state("u1", "third", 3, 3, hash_)
    for event in (v3, created, v2, v3, created):  # newest first, then older ones and repeats
        await deliver(s, event, "u1")
    assert await login(s, "third") == 200
    assert await login(s, "second") == 401 and await login(s, "first") == 401
    await deliver(s, UserDeleted(user_id="u1", version=4, occurred_at=T0), "u1")
    await deliver(s, v3, "u1")  # a late update does not bring a deleted user back
    assert await login(s, "third") == 401


async def test_a_name_handed_over_is_settled_whatever_the_order(s: Stack) -> None:
    hash_ = await hash_password(PASSWORD)
    a_v1 = state("a", "bob", 1, 1, hash_)
    a_v2 = state("a", "rob", 2, 2, hash_)  # a renamed bob -> rob ...
    b_v1 = state("b", "bob", 1, 3, hash_)  # ... then b registered as bob
    for event in (a_v1, b_v1):  # a's rename is late
        await deliver(s, event, event.user_id)
    assert await login(s, "bob") == 200  # b holds bob now
    await deliver(s, a_v2, "a")
    assert await login(s, "rob") == 200 and await login(s, "bob") == 200
    me = await s.client.post(
        "/api/v1/auth/login", json={"username_or_email": "bob", "password": PASSWORD}
    )
    token = me.json()["access_token"]
    who = await s.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert who.json()["sub"] == "b"
