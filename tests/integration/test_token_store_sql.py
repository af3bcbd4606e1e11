"""SqlTokenStore (embedded mode's budget and cache) on SQLite and PostgreSQL.

The simulation drives ten token managers with a fake clock against the fake partner of the
unit tests (the outside world, with its own budget); the store under test is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mercato.integration.module import MIGRATIONS
from mercato.integration.token_store import SqlTokenStore
from mercato.platform.db import Database
from mercato.platform.migrations import upgrade
from mercato.platform.token_stores import StoredToken
from tests.unit.test_token_manager import HOUR, FakePartner, SimClock, manager, simulate


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[tuple[SqlTokenStore, SqlTokenStore]]:
    """Two stores on two handles of one database: two replicas (or a process and its restart)."""
    first, second = Database("integration", database_url), Database("integration", database_url)
    await upgrade(first, [MIGRATIONS])
    yield SqlTokenStore(first), SqlTokenStore(second)
    await first.dispose()
    await second.dispose()


async def test_three_hours_ten_instances_share_one_budget(
    stores: tuple[SqlTokenStore, SqlTokenStore],
) -> None:
    partner = await simulate(stores[0], hours=3)
    print(f"\n3 h, 10 instances on the SQL store, budget 5/h: {len(partner.issued)} requests")
    assert 3 <= len(partner.issued) <= 5


async def test_thousand_callers_on_ten_replicas_at_expiry_make_one_request(
    stores: tuple[SqlTokenStore, SqlTokenStore],
) -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    managers = [manager(partner, stores[i % 2]) for i in range(10)]
    first = await managers[0].get_token()
    clock.now += HOUR  # expired everywhere
    tokens = await asyncio.gather(*(m.get_token() for m in managers for _ in range(100)))
    assert len(partner.issued) == 2
    assert len(set(tokens)) == 1 and tokens[0] != first


async def test_budget_is_checked_and_recorded_atomically_across_replicas(
    stores: tuple[SqlTokenStore, SqlTokenStore],
) -> None:
    now = 1_700_000_000.0
    results = await asyncio.gather(
        *(
            stores[i % 2].try_acquire_budget("p", now=now + i, limit=5, window=HOUR)
            for i in range(30)
        )
    )
    assert sum(ok for ok, _ in results) == 5
    assert await stores[1].requests_in_window("p", now=now + 40, window=HOUR) == 5
    oldest = min(now + i for i, (ok, _) in enumerate(results) if ok)
    ok, retry_after = await stores[0].try_acquire_budget("p", now=now + 100, limit=5, window=HOUR)
    assert not ok and retry_after == pytest.approx(oldest + HOUR - (now + 100))
    assert (await stores[0].try_acquire_budget("q", now=now, limit=5, window=HOUR))[0]
    ok, _ = await stores[1].try_acquire_budget("p", now=oldest + HOUR + 1, limit=5, window=HOUR)
    assert ok


async def test_token_cache_lock_and_compare_and_delete(
    stores: tuple[SqlTokenStore, SqlTokenStore],
) -> None:
    a, b = stores
    assert await a.load_token("p") is None
    token = StoredToken(access_token="t1", issued_at=10.0, expires_at=3610.0)
    await a.save_token("p", token, now=10.0)
    assert await b.load_token("p") == token
    assert "t1" not in repr(await b.load_token("p"))
    await b.clear_token("p", only_if="other")
    assert await a.load_token("p") == token
    await b.clear_token("p", only_if="t1")
    assert await a.load_token("p") is None
    assert await a.acquire_lock("p", "owner-a", ttl=30, now=100)
    assert not await b.acquire_lock("p", "owner-b", ttl=30, now=110)
    assert await b.acquire_lock("p", "owner-b", ttl=30, now=131)  # a's lock lapsed
    await a.release_lock("p", "owner-a")  # not a's any more: no effect
    assert not await a.acquire_lock("p", "owner-a", ttl=30, now=140)
    await b.release_lock("p", "owner-b")
    assert await a.acquire_lock("p", "owner-a", ttl=30, now=141)


async def test_last_error_is_shared_by_replicas(
    stores: tuple[SqlTokenStore, SqlTokenStore],
) -> None:
    a, b = stores
    assert await b.last_error("p") is None
    await a.record_error("p", "partner: token budget exhausted")
    assert await b.last_error("p") == "partner: token budget exhausted"
    await b.record_error("p", None)
    assert await a.last_error("p") is None
