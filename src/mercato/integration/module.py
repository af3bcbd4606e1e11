"""The integration service as the platform composes it (`mercato.integration.module`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from fastapi import APIRouter

from mercato.identity.contracts import ExporterHandover
from mercato.integration.api import integration_router
from mercato.integration.runtime import SERVICE, Integration
from mercato.integration.settings import IntegrationSettings
from mercato.platform import metrics
from mercato.platform.migrations import MigrationHistory
from mercato.platform.service import BackgroundTask, ServiceContext, ServiceModule

MIGRATIONS = MigrationHistory(Path(__file__).parent / "migrations", "alembic_version_integration")


def build_runtime(ctx: ServiceContext) -> Integration:
    """This process's integration runtime (`ServiceModule.dependencies`: built once, at start)."""
    return Integration(
        settings=ctx.settings,
        integ=IntegrationSettings(),
        database=ctx.database,
        redis=ctx.shared.redis,
        exporter=ctx.shared.handovers.of(ExporterHandover),
        wake_relay=ctx.wake_relay,
    )


def _router(ctx: ServiceContext[Integration]) -> APIRouter:
    # Read per request: `start` re-assembles the runtime's service in demo mode.
    return integration_router(lambda: ctx.deps.service, ctx.auth)


async def _on_start(ctx: ServiceContext[Integration]) -> None:
    await ctx.deps.start()


def _background(ctx: ServiceContext[Integration]) -> Sequence[BackgroundTask]:
    # Resolved when the loop starts: `start` may have re-assembled the runtime (demo mode).
    async def scheduler(stop: asyncio.Event) -> None:
        await ctx.deps.scheduler.run(stop)

    return [scheduler]


async def _on_stop(ctx: ServiceContext[Integration]) -> None:
    await ctx.deps.stop()


async def _on_scrape(ctx: ServiceContext[Integration]) -> None:
    # The budget lives in the token store (Redis or the database), shared by every replica:
    # read at scrape time, it is the same figure whichever replica is scraped.
    for manager in await ctx.deps.token_managers():
        status = await manager.status()
        metrics.budget_remaining(
            status.name, max(0, status.budget_per_hour - status.requests_last_hour)
        )


MODULE = ServiceModule(
    name=SERVICE,
    migrations=MIGRATIONS,
    dependencies=build_runtime,
    router=_router,
    on_start=_on_start,
    background=_background,
    on_stop=_on_stop,
    on_scrape=_on_scrape,
)
