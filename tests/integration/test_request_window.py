"""The platform's sliding-window counter on every store: the same answers as counting every
stamp of the window, a fixed number of rows per key, and a migration that keeps the hour."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from redis.asyncio import Redis
from sqlalchemy import Connection, func, inspect, select

from mercato.identity.tables import budget_stamps
from mercato.platform.db import Database, naming_metadata
from mercato.platform.migrations import MigrationHistory, upgrade
from mercato.platform.request_window import (
    BatchedSqlWindow,
    MemoryRequestWindow,
    RedisRequestWindow,
    SqlRequestWindow,
    window_tables,
)

HOUR = 3600.0
SRC = Path(__file__).parents[2] / "src/mercato"


def reference(stamps: list[float], now: float, limit: int, window: float) -> tuple[bool, float]:
    """The rule counted the slow way: every stamp of the window."""
    inside = sorted(at for at in stamps if now - window < at <= now)
    if len(inside) < limit:
        stamps.append(now)
        return True, 0.0
    return False, inside[len(inside) - limit] + window - now


def script(seed: int) -> list[tuple[float, int]]:
    """A day of requests in bursts and pauses, with the limit changing now and then."""
    rng = random.Random(seed)
    now, limit, steps = 1_700_000_000.0, 5, []
    for _ in range(300):
        now += rng.choice([0.0, 0.5, 7.0, 60.0, 700.0, 1800.0])
        if rng.random() < 0.05:
            limit = rng.choice([1, 3, 5, 8])
        steps.append((now, limit))
    return steps


async def check_against_reference(take: Any) -> None:
    for seed in range(3):
        stamps: list[float] = []
        for now, limit in script(seed):
            expected = reference(stamps, now, limit, HOUR)
            got = await take(f"k{seed}", now, limit)
            assert got[0] == expected[0], (seed, now, limit)
            assert got[1] == pytest.approx(expected[1], abs=1e-6)


async def test_memory_window_answers_like_counting_every_stamp() -> None:
    window = MemoryRequestWindow()

    async def take(key: str, now: float, limit: int) -> tuple[bool, float]:
        return window.take(key, now=now, limit=limit, window=HOUR)

    await check_against_reference(take)


@pytest.fixture
async def sql_window(database_url: str) -> AsyncIterator[tuple[Database, SqlRequestWindow]]:
    database = Database("identity", database_url)
    await upgrade(database, [])
    heads, stamps = window_tables(naming_metadata(), "token_budget")
    async with database.transaction() as conn:
        await conn.run_sync(lambda sync: heads.create(sync, checkfirst=True))
        await conn.run_sync(lambda sync: stamps.create(sync, checkfirst=True))
    yield database, SqlRequestWindow(heads, stamps)
    await database.dispose()


async def test_sql_window_answers_like_counting_every_stamp_with_bounded_rows(
    sql_window: tuple[Database, SqlRequestWindow],
) -> None:
    database, window = sql_window

    async def take(key: str, now: float, limit: int) -> tuple[bool, float]:
        async with database.transaction() as conn:
            return await window.take(conn, key, now=now, limit=limit, window=HOUR)

    await check_against_reference(take)
    async with database.read() as conn:
        rows = (
            await conn.execute(
                select(budget_stamps.c.key, func.count()).group_by(budget_stamps.c.key)
            )
        ).all()
    # Never more rows than the largest limit, whatever the day brought.
    assert rows and all(count <= 8 for _, count in rows)
    async with database.transaction() as conn:
        await window.forget(conn, "k0")
        assert await window.count(conn, "k0", now=2e9, window=HOUR) == 0


async def test_redis_window_answers_like_counting_every_stamp(
    redis_url: str, redis_prefix: str
) -> None:
    client = Redis.from_url(redis_url)
    window = RedisRequestWindow(client)
    try:

        async def take(key: str, now: float, limit: int) -> tuple[bool, float]:
            return await window.take(f"{redis_prefix}:{key}", now=now, limit=limit, window=HOUR)

        await check_against_reference(take)
        assert await client.zcard(f"{redis_prefix}:k0") <= 8
    finally:
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def _migrate_to(
    connection: Connection, history: MigrationHistory, revision: str, schema: str | None
) -> None:
    config = Config()
    config.set_main_option("script_location", str(history.path))
    config.attributes.update(
        connection=connection, version_table=history.version_table, schema=schema
    )
    command.upgrade(config, revision)


IDENTITY = MigrationHistory(SRC / "identity/migrations", "alembic_version_identity")
INTEGRATION = MigrationHistory(SRC / "integration/migrations", "alembic_version_integration")
# The table each service kept a row per request in, before its revision to the window.
OLD_TABLES = {
    "identity": ("identity_0003", "client_grants", "client_id", None),
    "integration": (
        "integration_0002",
        "token_requests",
        "name",
        # integration_0001 makes the tables `tables.py` declares now: an older database had it.
        "CREATE TABLE token_requests (seq INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL,"
        " at FLOAT NOT NULL)",
    ),
}


@pytest.mark.parametrize("service", ["identity", "integration"])
async def test_migration_moves_the_hours_requests_into_the_window(
    database_url: str, service: str
) -> None:
    history = IDENTITY if service == "identity" else INTEGRATION
    before, table, key_column, create = OLD_TABLES[service]
    database = Database(service, database_url)
    try:
        await upgrade(database, [])
        async with database.engine.begin() as conn:
            await conn.run_sync(_migrate_to, history, before, database.schema)
            if create and database_url.startswith("postgresql"):
                create = create.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")
            if create:
                await conn.exec_driver_sql(create)
            await conn.exec_driver_sql(
                f"INSERT INTO {table} ({key_column}, at) VALUES "
                + ", ".join(f"('c1', {1000.0 + i})" for i in range(3))
            )
        await upgrade(database, [history])
        heads, stamps = window_tables(naming_metadata(), "token_budget")
        window = SqlRequestWindow(heads, stamps)
        async with database.transaction() as conn:
            assert await window.count(conn, "c1", now=1100.0, window=HOUR) == 3
            # Budget 3: the three moved requests fill it until the first leaves the hour.
            ok, wait = await window.take(conn, "c1", now=1100.0, limit=3, window=HOUR)
            assert not ok and wait == pytest.approx(1000.0 + HOUR - 1100.0)
            assert not await conn.run_sync(lambda sync: inspect(sync).has_table(table))
    finally:
        await database.dispose()


async def test_batched_takes_from_two_replicas_never_exceed_the_limit(
    sql_window: tuple[Database, SqlRequestWindow], database_url: str
) -> None:
    first, window = sql_window
    second = Database("identity", database_url)
    try:
        replicas = [BatchedSqlWindow(window, db.transaction) for db in (first, second)]
        now = 1_700_000_000.0
        answers = await asyncio.gather(
            *(
                replicas[i % 2].take(f"k{i % 3}", now=now + i * 0.001, limit=7, window=HOUR)
                for i in range(90)
            )
        )
        granted = [i for i, (ok, _) in enumerate(answers) if ok]
        assert len(granted) == 21  # 7 for each of the 3 keys
        assert all(wait > HOUR - 1 for ok, wait in answers if not ok)
        async with first.read() as conn:
            assert await window.count(conn, "k0", now=now + 1, window=HOUR) == 7
    finally:
        await second.dispose()


async def test_a_failed_batch_reaches_every_caller_and_the_next_one_runs() -> None:
    opened = 0

    @asynccontextmanager
    async def broken() -> AsyncIterator[Any]:
        nonlocal opened
        opened += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("database away")
        yield  # pragma: no cover - never reached

    heads, stamps = window_tables(naming_metadata(), "token_budget")
    batched = BatchedSqlWindow(SqlRequestWindow(heads, stamps), broken)
    answers = await asyncio.gather(
        *(batched.take("k", now=1.0, limit=5, window=HOUR) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(answer, RuntimeError) for answer in answers)
    assert opened == 1  # one transaction for the five
    with pytest.raises(RuntimeError):
        await batched.take("k", now=2.0, limit=5, window=HOUR)
    assert opened == 2
