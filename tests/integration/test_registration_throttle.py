"""Registration cannot starve password hashing: a per-address limit (shared by replicas through
Redis), and a hashing pool that answers 503 when its registration line is full while logins
still get through, on both backends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from mercato.platform import passwords
from mercato.platform.passwords import REGISTER, PriorityPool
from mercato.platform.settings import Settings
from tests.harness import USER_PASSWORD, Stack, identity_knows, stack

REGISTER_PATH = "/api/v1/accounts/register"
PER_MINUTE = 3


def form(name: str) -> dict[str, str]:
    return {
        "username": name,
        "email": f"{name}@example.com",
        "password": USER_PASSWORD,
        "confirm_password": USER_PASSWORD,
    }


def client_from(s: Stack, address: str) -> httpx.AsyncClient:
    """A client of the stack's app whose requests come from `address`."""
    transport = httpx.ASGITransport(app=s.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://mercato.test")


@pytest.fixture
def few_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERCATO_ACCOUNTS_REGISTER_PER_MINUTE", str(PER_MINUTE))


@pytest.mark.usefixtures("few_per_minute")
async def test_registrations_past_the_limit_are_refused_per_address(backend: Settings) -> None:
    async with stack(backend, ["accounts"]) as s:
        for i in range(PER_MINUTE):
            assert (await s.client.post(REGISTER_PATH, json=form(f"user{i}"))).status_code == 201
        refused = await s.client.post(REGISTER_PATH, json=form("onetoomany"))
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "registrations" in refused.json()["detail"]
        # Failed attempts count too (a 409 probe for taken names costs the same budget).
        assert (await s.client.post(REGISTER_PATH, json=form("user0"))).status_code == 429
        # Another address has its own budget, and the refused name was never taken.
        async with client_from(s, "198.51.100.7") as other:
            assert (await other.post(REGISTER_PATH, json=form("onetoomany"))).status_code == 201


@pytest.mark.usefixtures("few_per_minute")
async def test_replicas_share_one_budget_per_address(backend: Settings) -> None:
    if backend.redis_url is None:
        pytest.skip("replicas exist in the distributed mode only")
    async with (
        stack(backend, ["accounts"]) as one,
        stack(backend, ["accounts"], role="api") as two,
    ):
        for i in range(PER_MINUTE):
            replica = one if i % 2 else two
            answer = await replica.client.post(REGISTER_PATH, json=form(f"user{i}"))
            assert answer.status_code == 201
        assert (await one.client.post(REGISTER_PATH, json=form("late1"))).status_code == 429
        assert (await two.client.post(REGISTER_PATH, json=form("late2"))).status_code == 429


@pytest.fixture
def saturated(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PriorityPool, threading.Event]]:
    """A hashing pool of one worker with room for two waiting jobs of each priority, and the
    event that releases what the test makes it wait on."""
    pool = PriorityPool(workers=1, max_waiting=2)
    monkeypatch.setattr(passwords, "_pool", pool)
    release = threading.Event()
    yield pool, release
    release.set()


async def test_a_full_registration_line_answers_503_and_logins_still_pass(
    backend: Settings, saturated: tuple[PriorityPool, threading.Event]
) -> None:
    pool, release = saturated
    async with stack(backend, ["accounts", "identity"]) as s:
        assert (await s.client.post(REGISTER_PATH, json=form("jane"))).status_code == 201
        while not await identity_knows(s, "jane"):
            await asyncio.sleep(0.05)
        started = threading.Event()
        pool.submit(REGISTER, lambda: (started.set(), release.wait(60)))
        assert await asyncio.to_thread(started.wait, 60)
        waiting = [
            asyncio.create_task(s.client.post(REGISTER_PATH, json=form(f"wait{i}")))
            for i in range(2)
        ]
        while pool.waiting(REGISTER) < 2:
            await asyncio.sleep(0.01)
        refused = await s.client.post(REGISTER_PATH, json=form("refused"))
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        # A login is queued ahead of the waiting registrations, not refused with them.
        login = asyncio.create_task(
            s.client.post(
                "/api/v1/auth/login", json={"username_or_email": "jane", "password": USER_PASSWORD}
            )
        )
        while pool.waiting(passwords.LOGIN) < 1:
            await asyncio.sleep(0.01)
        release.set()
        assert (await login).status_code == 200
        assert [(await w).status_code for w in waiting] == [201, 201]
        # The refused registration left nothing behind: the name is free.
        assert (await s.client.post(REGISTER_PATH, json=form("refused"))).status_code == 201
