"""The external sync jobs over real HTTP against the partner sandbox, on SQLite and PostgreSQL.

The whole integration runtime is used as the server builds it (settings, SQL token store,
resilient clients, token manager, jobs, scheduler); only the clock of the runs is real time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mercato.integration.module import MIGRATIONS
from mercato.integration.runtime import Integration
from mercato.integration.settings import IntegrationSettings
from mercato.platform.db import Database
from mercato.platform.events.tables import outbox
from mercato.platform.http import (
    CircuitBreaker,
    CircuitOpenError,
    ResilientClient,
    RetryPolicy,
    UpstreamError,
)
from mercato.platform.migrations import upgrade
from mercato.platform.settings import Settings
from tests.integration.partner_server import fault, partner, stats

ORDERS, PRODUCTS = "sync-external-orders", "sync-external-products"
Build = Callable[..., Awaitable[Integration]]


@pytest.fixture
async def build(database_url: str, tmp_path: Path) -> AsyncIterator[Build]:
    """Builds integration runtimes on one database (several = replicas or restarts)."""
    made: list[Integration] = []
    databases: list[Database] = []

    async def make(base_url: str | None, **overrides: Any) -> Integration:
        database = Database("integration", database_url)
        databases.append(database)
        await upgrade(database, [MIGRATIONS])
        options: dict[str, Any] = {
            "http_attempt_timeout": 2.0,
            "http_total_timeout": 5.0,
            "external_page_size": 7,
        }
        if base_url:
            options |= {
                "external_base_url": base_url,
                "external_client_id": "partner-client",
                "external_client_secret": "partner-secret",
            }
        runtime = Integration(
            settings=Settings(data_dir=tmp_path / "data"),
            integ=IntegrationSettings(**(options | overrides)),
            database=database,
        )
        await runtime.start()
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.stop()
    for database in databases:
        await database.dispose()


async def events(runtime: Integration, kind: str) -> list[dict[str, Any]]:
    async with runtime.database.read() as conn:
        rows = (
            await conn.execute(
                select(outbox.c.envelope).where(outbox.c.event_type == kind).order_by(outbox.c.seq)
            )
        ).all()
    return [json.loads(r.envelope)["data"] for r in rows]


async def test_eight_order_syncs_use_one_token_and_invalidate_costs_one_more(
    build: Build,
) -> None:
    async with partner() as base:
        runtime = await build(base)
        for i in range(8):
            run = await runtime.scheduler.run_now(ORDERS)
            assert run.status == "succeeded", run.error
            expected = {"created": 20, "updated": 0, "unchanged": 0, "failed": 0}
            if i:
                expected = {"created": 0, "updated": 0, "unchanged": 20, "failed": 0}
            assert run.counts == expected
        assert (await stats(base))["tokens_issued"] == 1
        orders, total = await runtime.service.external_orders(0, 100)
        assert total == 20 and len({o["external_id"] for o in orders}) == 20
        imported = await events(runtime, "external_order.imported")
        assert len(imported) == 20 and all(e["created"] for e in imported)

        assert await runtime.service.forget_tokens() == ["partner"]
        assert (await runtime.scheduler.run_now(ORDERS)).status == "succeeded"
        assert (await stats(base))["tokens_issued"] == 2
        status = (await runtime.service.token_status())["partner"]
        assert status.has_token and status.requests_last_hour == 2
        assert status.budget_per_hour == 5 and status.last_error is None


async def test_a_token_refused_mid_life_is_renewed_once(build: Build) -> None:
    async with partner() as base:
        runtime = await build(base)
        assert (await runtime.scheduler.run_now(ORDERS)).status == "succeeded"
        await fault(base, revoke_tokens=True)
        run = await runtime.scheduler.run_now(ORDERS)
        assert run.status == "succeeded" and run.counts["unchanged"] == 20
        figures = await stats(base)
        assert figures["tokens_issued"] == 2
        # 3 pages of 7 per run, plus the refused attempt of the second run.
        assert figures["requests_by_path"]["/api/orders"] == 3 + 1 + 3


async def test_token_and_budget_survive_a_restart(build: Build) -> None:
    async with partner() as base:
        first = await build(base)
        assert (await first.scheduler.run_now(ORDERS)).status == "succeeded"
        await first.stop()
        again = await build(base)  # a new process on the same database
        assert (await again.scheduler.run_now(ORDERS)).status == "succeeded"
        assert (await stats(base))["tokens_issued"] == 1
        assert (await again.service.token_status())["partner"].requests_last_hour == 1


async def test_changed_orders_are_updated_and_announced(build: Build) -> None:
    async with partner() as base:
        runtime = await build(base)
        await runtime.scheduler.run_now(ORDERS)
        async with httpx.AsyncClient(base_url=base) as raw:  # new data, the same order ids
            (await raw.post("/_seed", json={"products": 31, "orders": 20})).raise_for_status()
        run = await runtime.scheduler.run_now(ORDERS)
        assert run.counts["created"] == 0 and run.counts["failed"] == 0
        assert run.counts["updated"] > 0
        assert run.counts["updated"] + run.counts["unchanged"] == 20
        imported = await events(runtime, "external_order.imported")
        assert len(imported) == 20 + run.counts["updated"]
        assert [e["created"] for e in imported[20:]] == [False] * run.counts["updated"]
        _, total = await runtime.service.external_orders(0, 1)
        assert total == 20


async def test_product_syncs_create_no_duplicates_and_update_changes(build: Build) -> None:
    async with partner(products=30) as base:
        runtime = await build(base)
        first = await runtime.scheduler.run_now(PRODUCTS)
        assert first.counts == {"created": 30, "updated": 0, "unchanged": 0, "failed": 0}
        second = await runtime.scheduler.run_now(PRODUCTS)
        assert second.counts == {"created": 0, "updated": 0, "unchanged": 30, "failed": 0}
        await fault(base, update_product={"id": 3, "price": 9.99, "title": "Renamed 3"})
        third = await runtime.scheduler.run_now(PRODUCTS)
        assert third.counts == {"created": 0, "updated": 1, "unchanged": 29, "failed": 0}
        synced = await events(runtime, "external_product.synced")
        assert len(synced) == 31
        assert {e["external_id"] for e in synced} == {str(i) for i in range(1, 31)}
        last = synced[-1]
        assert last["external_id"] == "3" and last["price"] == "9.99"
        assert last["name"] == "Renamed 3" and last["created"] is False
        assert last["source"] == "partner" and last["run_id"] == third.id
        status = await runtime.service.runs(PRODUCTS, 0, 10)
        assert [r.status for r in status[0]] == ["succeeded"] * 3


async def test_429_and_503_are_retried_inside_a_run(build: Build) -> None:
    async with partner() as base:
        runtime = await build(base)
        await fault(base, rate_limit_next=1, retry_after=1, fail_next=2, status=503)
        started = time.monotonic()
        run = await runtime.scheduler.run_now(PRODUCTS)
        assert run.status == "succeeded", run.error
        assert time.monotonic() - started >= 0.95  # Retry-After honoured
        # 5 pages of 7 for 30 products, plus three refused attempts.
        assert (await stats(base))["requests_by_path"]["/products"] == 5 + 3


async def test_a_failing_partner_fails_the_run_and_the_next_run_is_normal(
    build: Build,
) -> None:
    async with partner() as base:
        runtime = await build(base, http_attempt_timeout=0.3, http_total_timeout=0.8)
        await fault(base, hang_seconds=3, hang_next=10)
        started = time.monotonic()
        failed = await runtime.scheduler.run_now(PRODUCTS)
        assert time.monotonic() - started < 2.0  # cut by the timeouts
        assert failed.status == "failed" and failed.error is not None
        assert failed.error.startswith("UpstreamError: partner:")
        await fault(base, reset=True)
        assert (await runtime.scheduler.run_now(PRODUCTS)).status == "succeeded"


async def test_the_breaker_opens_and_recovers() -> None:
    async with partner() as base:
        breaker = CircuitBreaker("partner", failure_threshold=3, reset_timeout=0.3)
        policy = RetryPolicy(attempts=3, backoff_base=0.01, attempt_timeout=2, total_timeout=5)
        async with ResilientClient("partner", base_url=base, retry=policy, breaker=breaker) as http:
            await fault(base, fail_next=50, status=503)
            with pytest.raises(UpstreamError):
                await http.get("/products")
            assert breaker.state == "open"
            seen = (await stats(base))["requests_by_path"]["/products"]
            with pytest.raises(CircuitOpenError):
                await http.get("/products")
            assert (await stats(base))["requests_by_path"]["/products"] == seen  # not sent
            await fault(base, reset=True)
            await asyncio.sleep(0.35)  # past the reset timeout: one probe goes through
            assert (await http.get("/products")).status_code == 200
            assert breaker.state == "closed"


async def test_without_a_provider_the_syncs_are_disabled_with_the_reason(build: Build) -> None:
    runtime = await build(None)
    views = {v.name: v for v in await runtime.service.list_jobs()}
    for name in (ORDERS, PRODUCTS):
        assert not views[name].enabled
        assert "MERCATO_EXTERNAL_BASE_URL" in (views[name].disabled_reason or "")
    assert "MERCATO_EXPORTER_CLIENT_SECRET" in (views["export-products"].disabled_reason or "")
    assert await runtime.service.token_status() == {}
    only_url = await build("http://127.0.0.1:9", external_client_id=None)
    views = {v.name: v for v in await only_url.service.list_jobs()}
    assert views[PRODUCTS].enabled
    assert "MERCATO_EXTERNAL_CLIENT_ID" in (views[ORDERS].disabled_reason or "")


@pytest.mark.redis
async def test_replicas_share_token_and_budget_through_redis(
    database_url: str, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    from redis.asyncio import Redis

    from mercato.integration.token_store import DurableBudgetTokenStore

    clients = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    databases = [Database("integration", database_url) for _ in clients]
    await upgrade(databases[0], [MIGRATIONS])
    settings = Settings(data_dir=tmp_path / "data", redis_prefix=redis_prefix)
    try:
        async with partner() as base:
            integ = IntegrationSettings(
                external_base_url=base,
                external_client_id="partner-client",
                external_client_secret="partner-secret",
            )
            replicas = [
                Integration(settings=settings, integ=integ, database=db, redis=client)
                for db, client in zip(databases, clients, strict=True)
            ]
            assert all(isinstance(r.store, DurableBudgetTokenStore) for r in replicas)
            for replica in replicas * 3:
                assert (await replica.scheduler.run_now(ORDERS)).status == "succeeded"
            assert (await stats(base))["tokens_issued"] == 1
            status = (await replicas[1].service.token_status())["partner"]
            assert status.has_token and status.requests_last_hour == 1
            for replica in replicas:
                await replica.stop()
    finally:
        keys = [k async for k in clients[0].scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await clients[0].delete(*keys)
        for client, db in zip(clients, databases, strict=True):
            await client.aclose()
            await db.dispose()
