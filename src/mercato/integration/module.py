"""The integration service as the platform composes it (`mercato.integration.module`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from fastapi import APIRouter

from mercato.integration.api import integration_router
from mercato.integration.runtime import SERVICE, Integration
from mercato.integration.settings import IntegrationSettings
from mercato.platform import metrics
from mercato.platform.migrations import MigrationHistory
from mercato.platform.service import BackgroundTask, ServiceContext, ServiceModule

MIGRATIONS = MigrationHistory(Path(__file__).parent / "migrations", "alembic_version_integration")
_RUNTIME_KEY = "integration.runtime"  # private: only this module reads it


def runtime(ctx: ServiceContext) -> Integration:
    """This process's integration runtime (built once per platform, on first use)."""
    found = ctx.shared.extras.get(_RUNTIME_KEY)
    if isinstance(found, Integration):
        return found
    built = Integration(
        settings=ctx.settings,
        integ=IntegrationSettings(),
        database=ctx.database,
        redis=ctx.shared.redis,
        extras=ctx.shared.extras,
        wake_relay=ctx.wake_relay,
    )
    ctx.shared.extras[_RUNTIME_KEY] = built
    return built


def _router(ctx: ServiceContext) -> APIRouter:
    return integration_router(lambda: runtime(ctx).service, ctx.auth)


async def _on_start(ctx: ServiceContext) -> None:
    await runtime(ctx).start()


def _background(ctx: ServiceContext) -> Sequence[BackgroundTask]:
    # Resolved when the loop starts: `start` may have re-assembled the runtime (demo mode).
    async def scheduler(stop: asyncio.Event) -> None:
        await runtime(ctx).scheduler.run(stop)

    return [scheduler]


async def _on_stop(ctx: ServiceContext) -> None:
    await runtime(ctx).stop()


async def _on_scrape(ctx: ServiceContext) -> None:
    # The budget lives in the token store (Redis or the database), shared by every replica:
    # read at scrape time, it is the same figure whichever replica is scraped.
    for manager in await runtime(ctx).token_managers():
        status = await manager.status()
        metrics.budget_remaining(
            status.name, max(0, status.budget_per_hour - status.requests_last_hour)
        )


MODULE = ServiceModule(
    name=SERVICE,
    migrations=MIGRATIONS,
    router=_router,
    on_start=_on_start,
    background=_background,
    on_stop=_on_stop,
    on_scrape=_on_scrape,
)
