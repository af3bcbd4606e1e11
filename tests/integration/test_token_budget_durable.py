"""With Redis, integration keeps the upstream's token budget in its database: a Redis that lost
everything (restart without persistence) still knows the hour's requests, so the replicas never
spend a second budget within the hour (DESIGN §5)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from mercato.integration.module import MIGRATIONS
from mercato.integration.token_store import DurableBudgetTokenStore, SqlTokenStore
from mercato.platform.db import Database
from mercato.platform.migrations import upgrade
from mercato.platform.token_stores import RedisTokenStore, StoredToken

HOUR = 3600.0


async def test_budget_survives_a_redis_that_forgot_everything(
    database_url: str, redis_url: str, redis_prefix: str
) -> None:
    redis_prefix = redis_prefix.replace("[", "(").replace("]", ")")  # no glob characters
    database = Database("integration", database_url)
    client = aioredis.from_url(redis_url)
    try:
        await upgrade(database, [MIGRATIONS])
        store = DurableBudgetTokenStore(
            RedisTokenStore(client, redis_prefix), SqlTokenStore(database)
        )
        now = time.time()  # Redis expires the cached token at its real expiry
        for i in range(5):
            ok, _ = await store.try_acquire_budget("partner", now=now + i, limit=5, window=HOUR)
            assert ok
        token = StoredToken(access_token="t", issued_at=now, expires_at=now + HOUR)
        await store.save_token("partner", token, now=now)
        assert await store.load_token("partner") is not None
        keys = [k async for k in client.scan_iter(f"{redis_prefix}*")]
        await client.delete(*keys)  # what a Redis restart without persistence leaves
        assert await store.load_token("partner") is None  # the cache may be lost...
        ok, wait = await store.try_acquire_budget("partner", now=now + 10, limit=5, window=HOUR)
        assert not ok and 0 < wait <= HOUR  # ...the budget may not
        assert await store.requests_in_window("partner", now=now + 10, window=HOUR) == 5
    finally:
        keys = [k async for k in client.scan_iter(f"{redis_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await database.dispose()
