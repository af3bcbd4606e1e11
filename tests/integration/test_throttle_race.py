"""The login throttle under a burst: 100 concurrent wrong passwords for an account that has no
throttle row yet get exactly the designed number of password checks, on both backends."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from mercato.identity import wiring
from mercato.platform.settings import Settings
from tests.harness import USER_PASSWORD, Stack, register_user, stack

SERVICES = ["accounts", "identity"]
FREE_FAILURES = 5
BURST = 100


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times identity really checked a password (wraps the checker it is built with)."""
    seen: Counter[str] = Counter()
    real = wiring.verify_password

    async def counting(password_hash: str | None, password: str) -> bool:
        seen["checked"] += 1
        return await real(password_hash, password)

    monkeypatch.setattr(wiring, "verify_password", counting)
    return seen


@pytest.fixture(autouse=True)
def long_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    # A lock-out that outlives the burst however slow the machine; the address limit stays above
    # the account's, so the account's lock is the one that decides.
    monkeypatch.setenv("MERCATO_IDENTITY_LOGIN_BASE_DELAY_SECONDS", "600")
    monkeypatch.setenv("MERCATO_IDENTITY_LOGIN_FREE_FAILURES", str(FREE_FAILURES))
    monkeypatch.setenv("MERCATO_IDENTITY_IP_FREE_FAILURES", "1000")


async def login(s: Stack, password: str) -> httpx.Response:
    return await s.client.post(
        "/api/v1/auth/login", json={"username_or_email": "jane", "password": password}
    )


async def test_a_burst_of_wrong_passwords_gets_the_free_failures_and_one_more(
    backend: Settings, checks: Counter[str]
) -> None:
    async with stack(backend, SERVICES) as s:
        await register_user(s, "jane")  # logs in once: a success leaves no throttle row
        checks.clear()
        answers = await asyncio.gather(*(login(s, f"Wrong-Guess-{i}") for i in range(BURST)))
        statuses = Counter(a.status_code for a in answers)
        # Five free failures plus the one that sets the lock; every other guess is refused
        # before its password is looked at.
        assert statuses == {401: FREE_FAILURES + 1, 429: BURST - FREE_FAILURES - 1}
        assert checks["checked"] == FREE_FAILURES + 1
        refused = [a for a in answers if a.status_code == 429]
        assert all(int(a.headers["retry-after"]) > 0 for a in refused)
        # The right password waits too while the lock holds, and is not checked either.
        right = await login(s, USER_PASSWORD)
        assert right.status_code == 429
        assert right.headers["content-type"] == "application/problem+json"
        assert checks["checked"] == FREE_FAILURES + 1
