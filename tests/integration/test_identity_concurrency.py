"""Races and persistence: concurrent refreshes with one token, and the login throttle across a
restart, on both backends."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from mercato.platform.settings import Settings
from tests.harness import USER_PASSWORD, Stack, register_user, stack

SERVICES = ["accounts", "identity"]
LOGIN = "/api/v1/auth/login"


async def login(s: Stack, who: str, password: str = USER_PASSWORD) -> httpx.Response:
    return await s.client.post(LOGIN, json={"username_or_email": who, "password": password})


async def test_two_concurrent_refreshes_one_wins_and_the_family_is_revoked(
    backend: Settings,
) -> None:
    async with stack(backend, SERVICES) as s:
        await register_user(s, "jane")
        for _ in range(3):
            token = (await login(s, "jane")).json()["refresh_token"]
            answers = await asyncio.gather(
                *(
                    s.client.post("/api/v1/auth/refresh", json={"refresh_token": token})
                    for _ in range(2)
                )
            )
            assert sorted(a.status_code for a in answers) == [200, 401]
            [winner] = [a.json() for a in answers if a.status_code == 200]
            later = await s.client.post(
                "/api/v1/auth/refresh", json={"refresh_token": winner["refresh_token"]}
            )
            assert later.status_code == 401
            me = await s.client.get(
                "/api/v1/auth/me", headers={"Authorization": f"Bearer {winner['access_token']}"}
            )
            assert me.status_code == 401


@pytest.fixture
def slow_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    # A lock-out long enough to outlive a restart of the stack, whatever the machine's speed.
    monkeypatch.setenv("MERCATO_IDENTITY_LOGIN_BASE_DELAY_SECONDS", "120")
    monkeypatch.setenv("MERCATO_IDENTITY_LOGIN_FREE_FAILURES", "3")


@pytest.mark.usefixtures("slow_throttle")
async def test_failed_logins_lock_the_account_and_the_lock_survives_restart(
    backend: Settings,
) -> None:
    async with stack(backend, SERVICES) as s:
        await register_user(s, "jane")
        for _ in range(2):
            assert (await login(s, "jane", "Wrong-Password-1")).status_code == 401
        assert (await login(s, "jane")).status_code == 200  # a success resets the count
        for _ in range(4):  # 3 free failures, then one that sets the lock
            assert (await login(s, "jane", "Wrong-Password-1")).status_code == 401
        locked = await login(s, "jane")  # even the right password waits
        assert locked.status_code == 429
        assert 60 <= int(locked.headers["retry-after"]) <= 120
        assert locked.headers["content-type"] == "application/problem+json"
        # The e-mail names the same account: it is locked too.
        assert (await login(s, "jane@example.com")).status_code == 429
    async with stack(backend, SERVICES) as s:
        again = await login(s, "jane")
        assert again.status_code == 429 and int(again.headers["retry-after"]) > 0


async def test_failures_from_one_address_lock_it_across_accounts(
    backend: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERCATO_IDENTITY_LOGIN_BASE_DELAY_SECONDS", "120")
    monkeypatch.setenv("MERCATO_IDENTITY_IP_FREE_FAILURES", "3")
    async with stack(backend, SERVICES) as s:
        await register_user(s, "jane")
        for name in ("u1", "u2", "u3", "u4"):  # one guess each: no account is locked
            assert (await login(s, name, "Guess-123456")).status_code == 401
        answer = await login(s, "jane")
        assert answer.status_code == 429 and "retry-after" in answer.headers
