"""RedisTokenStore on a real Redis: the budget and the cache shared by replicas and restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from mercato.platform.token_stores import RedisTokenStore, StoredToken
from tests.unit.test_token_manager import HOUR, FakePartner, SimClock, manager, simulate

pytestmark = pytest.mark.redis


@pytest.fixture(params=[False, True], ids=["bytes", "decoded"])
async def redis(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=request.param)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_six_hours_ten_instances_share_the_budget_through_redis(
    redis: Redis, redis_prefix: str
) -> None:
    partner = await simulate(RedisTokenStore(redis, redis_prefix), hours=6)
    print(f"\n6 h, 10 instances on Redis, budget 5/h: {len(partner.issued)} token requests")
    assert 6 <= len(partner.issued) <= 8


async def test_budget_is_checked_and_recorded_atomically(redis: Redis, redis_prefix: str) -> None:
    store = RedisTokenStore(redis, redis_prefix)
    now = 1_700_000_000.25
    results = await asyncio.gather(
        *(
            store.try_acquire_budget("p", now=now + i * 0.001, limit=5, window=HOUR)
            for i in range(40)
        )
    )
    assert sum(ok for ok, _ in results) == 5
    assert await store.requests_in_window("p", now=now + 1, window=HOUR) == 5
    ok, retry_after = await store.try_acquire_budget("p", now=now + 600, limit=5, window=HOUR)
    # Which five callers won is up to scheduling; the oldest winner frees the next slot.
    oldest = min(now + i * 0.001 for i, (won, _) in enumerate(results) if won)
    assert not ok and retry_after == pytest.approx(oldest + HOUR - (now + 600), abs=0.001)
    # An hour after the oldest winner, one slot is free again.
    ok, _ = await store.try_acquire_budget("p", now=oldest + HOUR + 0.0005, limit=5, window=HOUR)
    assert ok
    # Other upstreams have their own budget.
    assert (await store.try_acquire_budget("q", now=now, limit=5, window=HOUR))[0]


async def test_cached_token_and_budget_survive_a_restart(
    redis: Redis, redis_prefix: str, redis_url: str
) -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    first = manager(partner, RedisTokenStore(redis, redis_prefix))
    token = await first.get_token()
    clock.now += 600
    # A new process: new connection, new store object, new manager.
    other = Redis.from_url(redis_url)
    try:
        again = manager(partner, RedisTokenStore(other, redis_prefix))
        assert await again.get_token() == token
        status = await again.status()
        assert status.has_token and status.requests_last_hour == 1
        assert len(partner.issued) == 1
    finally:
        await other.aclose()


async def test_clear_token_is_compare_and_delete(redis: Redis, redis_prefix: str) -> None:
    store = RedisTokenStore(redis, redis_prefix)
    token = StoredToken(access_token="abc", issued_at=100.0, expires_at=3700.0)
    await store.save_token("p", token, now=100.0)
    assert await store.load_token("p") == token
    await store.clear_token("p", only_if="other")
    assert await store.load_token("p") == token
    await store.clear_token("p", only_if="abc")
    assert await store.load_token("p") is None
    await store.save_token("p", token, now=100.0)
    await store.clear_token("p")
    assert await store.load_token("p") is None


async def test_lock_has_one_owner_at_a_time(redis: Redis, redis_prefix: str) -> None:
    store = RedisTokenStore(redis, redis_prefix)
    assert await store.acquire_lock("p", "a", ttl=5, now=0)
    assert not await store.acquire_lock("p", "b", ttl=5, now=0)
    await store.release_lock("p", "b")  # not b's to release
    assert not await store.acquire_lock("p", "b", ttl=5, now=0)
    await store.release_lock("p", "a")
    assert await store.acquire_lock("p", "b", ttl=0.05, now=0)
    await asyncio.sleep(0.1)  # a crashed holder's lock lapses
    assert await store.acquire_lock("p", "c", ttl=5, now=0)


async def test_ten_instances_on_redis_make_one_request_at_start(
    redis: Redis, redis_prefix: str
) -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    managers = [manager(partner, RedisTokenStore(redis, redis_prefix)) for _ in range(10)]
    tokens = await asyncio.gather(*(m.get_token() for m in managers for _ in range(50)))
    assert len(partner.issued) == 1
    assert len(set(tokens)) == 1


async def test_last_error_is_shared_and_cleared(redis: Redis, redis_prefix: str) -> None:
    here, there = RedisTokenStore(redis, redis_prefix), RedisTokenStore(redis, redis_prefix)
    assert await there.last_error("p") is None
    await here.record_error("p", "partner: token endpoint answered 503")
    assert await there.last_error("p") == "partner: token endpoint answered 503"
    assert 0 < await redis.ttl(f"{redis_prefix}:token-error:p") <= 7 * 24 * 3600
    await there.record_error("p", None)
    assert await here.last_error("p") is None
