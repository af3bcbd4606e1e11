"""Start the real platform inside a test, on the embedded or the distributed backend.

`stack(settings, services)` runs the platform's lifespan (migrations, transport, consumers,
relays, start-up hooks) and drives its ASGI app over httpx, so tests go through the same routes,
auth and event plumbing a user meets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from fastapi import FastAPI

from mercato.app import build_platform
from mercato.platform.auth import generate_signing_key, issue_access_token, jwks
from mercato.platform.runtime import Platform, Role
from mercato.platform.settings import Settings

ADMIN_PASSWORD = "Admin-Pass-1234"
USER_PASSWORD = "Correct-Horse-9"
_TEST_KEY = generate_signing_key("ES256")
FAST_RETRIES = (0.05, 0.2, 0.5)
_TEST_SECRETS_KEY = Fernet.generate_key().decode()


def embedded_settings(data_dir: Path, **overrides: Any) -> Settings:
    """SQLite files in `data_dir`, in-process events, in-memory shared state."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "admin_password": ADMIN_PASSWORD,
        "event_retry_delays": FAST_RETRIES,
        "relay_poll_seconds": 0.05,
        **overrides,
    }
    return Settings(**values)


def distributed_settings(
    data_dir: Path, database_url: str, broker_url: str, redis_url: str, **overrides: Any
) -> Settings:
    """PostgreSQL (a schema per service), RabbitMQ and Redis, isolated by a fresh tag."""
    tag = uuid.uuid4().hex[:8]
    return embedded_settings(
        data_dir,
        database_url=database_url,
        broker_url=broker_url,
        broker_exchange=f"t{tag}.events",
        broker_queue_prefix=f"t{tag}",
        redis_url=redis_url,
        redis_prefix=f"mercato-t:{tag}",
        # Distributed roles refuse to start without a shared key-encryption key.
        **({"secrets_key": _TEST_SECRETS_KEY} | overrides),
    )


@dataclass
class Stack:
    """A started platform, its app and an HTTP client on it."""

    platform: Platform
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings


@asynccontextmanager
async def stack(
    settings: Settings, services: Sequence[str] | None = None, *, role: Role = "embedded"
) -> AsyncIterator[Stack]:
    """The platform with `services` (all by default), started; stopped on exit. Another role
    (`api`: a replica of `mercato serve`) skips migrations, which the first stack applied."""
    platform = build_platform(settings, services, role=role, migrate_on_start=role == "embedded")
    if "identity" not in platform.contexts:
        # No identity in this stack: tokens come from a test key (see `caller_token`).
        platform.shared.local_jwks = lambda: jwks([_TEST_KEY])
    app = platform.create_app("Mercato")
    await platform.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mercato.test") as client:
            yield Stack(platform, app, client, settings)
    finally:
        await platform.stop()


async def delete_broker_topology(settings: Settings) -> None:
    """Delete the queues and exchanges stacks on `settings` declared (each is a quorum queue, a
    Raft group on the broker: left behind by hundreds of tests they wear the test broker down).
    Called when a test ends, not when a stack stops: a test may restart a stack on the same
    queues to see a backlog applied."""
    import aio_pika

    from mercato.app import load_modules

    assert settings.broker_url is not None
    names: list[str] = []
    for module in load_modules():
        if module.handlers:
            main = f"{settings.broker_queue_prefix}.{module.name}"
            delays = sorted(set(settings.event_retry_delays))
            names += [main, f"{main}.dead", *(f"{main}.retry.{round(d * 1000)}ms" for d in delays)]
    connection = await aio_pika.connect(settings.broker_url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
        for exchange in (settings.broker_exchange, f"{settings.broker_exchange}.dlx"):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll `check` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")


@dataclass(frozen=True)
class Caller:
    """Someone calling the API: their user id and the headers carrying their token."""

    id: str
    headers: dict[str, str]


async def register_user(s: Stack, username: str, password: str = USER_PASSWORD) -> Caller:
    """Register through accounts and log in (through identity when this stack runs it)."""
    answer = await s.client.post(
        "/api/v1/accounts/register",
        json={
            "username": username,
            "email": f"{username}@example.com",
            "password": password,
            "confirm_password": password,
        },
    )
    assert answer.status_code == 201, answer.text
    user_id = answer.json()["id"]
    token = await caller_token(s, username, password, sub=user_id, roles=["user"])
    return Caller(user_id, {"Authorization": f"Bearer {token}"})


async def admin(s: Stack) -> Caller:
    """The bootstrap admin, logged in."""
    token = await caller_token(
        s, "admin", ADMIN_PASSWORD, sub="test-admin", roles=["admin", "user"]
    )
    me = await s.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    user_id = me.json()["sub"] if me.status_code == 200 else "test-admin"
    return Caller(user_id, {"Authorization": f"Bearer {token}"})


async def caller_token(
    s: Stack, username: str, password: str, *, sub: str, roles: list[str]
) -> str:
    """A person's access token: a real login when identity runs here, else signed by a test key.

    The login waits until identity has applied the `user.created` event (it is eventually
    consistent by design).
    """
    if "identity" not in s.platform.contexts:
        token, _ = issue_access_token(
            _TEST_KEY,
            issuer=s.settings.issuer,
            audience=s.settings.audience,
            subject=sub,
            client_id="mercato-test",
            scopes=[],
            roles=roles,
            lifetime_seconds=900,
        )
        return token
    # Wait for identity's replica instead of retrying the login: failed logins are throttled.
    await eventually(lambda: identity_knows(s, username), what=f"identity knows {username}")
    answer = await s.client.post(
        "/api/v1/auth/login", json={"username_or_email": username, "password": password}
    )
    if answer.status_code != 200:
        raise AssertionError(f"login as {username} failed: {answer.status_code} {answer.text}")
    return str(answer.json()["access_token"])


async def identity_knows(s: Stack, login: str, *, version: int | None = None) -> bool:
    """Whether identity's credential replica holds a user by this username or e-mail (at
    `version` or later when given): the moment a login can work."""
    from sqlalchemy import or_, select

    from mercato.identity.domain import login_key
    from mercato.identity.tables import credentials

    key = login_key(login)
    async with s.platform.databases["identity"].read() as conn:
        row = (
            await conn.execute(
                select(credentials.c.version).where(
                    or_(credentials.c.username_key == key, credentials.c.email_key == key)
                )
            )
        ).first()
    return row is not None and (version is None or row[0] >= version)


async def identity_version(s: Stack, user_id: str) -> int | None:
    """The version of a user identity's replica holds (None when it has none)."""
    from sqlalchemy import select

    from mercato.identity.tables import credentials

    async with s.platform.databases["identity"].read() as conn:
        row = (
            await conn.execute(
                select(credentials.c.version).where(credentials.c.user_id == user_id)
            )
        ).first()
    return None if row is None else int(row[0])


async def machine(s: Stack, scopes: list[str], client_id: str = "robot") -> dict[str, str]:
    """Headers with a machine's client-credentials token carrying `scopes`.

    Through identity when this stack runs it: an admin registers the client, which then asks
    `/oauth/token` for its token. Otherwise signed by the test key (no `roles` claim).
    """
    if "identity" not in s.platform.contexts:
        token, _ = issue_access_token(
            _TEST_KEY,
            issuer=s.settings.issuer,
            audience=s.settings.audience,
            subject=client_id,
            client_id=client_id,
            scopes=scopes,
            roles=None,
            lifetime_seconds=900,
        )
        return {"Authorization": f"Bearer {token}"}
    boss = await admin(s)
    made = await s.client.post(
        "/api/v1/admin/clients",
        headers=boss.headers,
        json={"client_id": client_id, "name": client_id, "scopes": scopes},
    )
    assert made.status_code == 201, made.text
    answer = await s.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": " ".join(scopes)},
        auth=(client_id, made.json()["client_secret"]),
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}
