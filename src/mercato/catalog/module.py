"""How the platform runs catalog: its routes, consumers and migrations."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from mercato.catalog.api import build_router
from mercato.catalog.api_sync import build_sync_router
from mercato.catalog.handlers import HANDLERS
from mercato.platform.migrations import MigrationHistory
from mercato.platform.service import ServiceContext, ServiceModule


def routes(ctx: ServiceContext) -> APIRouter:
    """Products and the external-sync endpoints."""
    router = APIRouter()
    router.include_router(build_router(ctx))
    router.include_router(build_sync_router(ctx))
    return router


MODULE = ServiceModule(
    name="catalog",
    migrations=MigrationHistory(Path(__file__).parent / "migrations", "alembic_version_catalog"),
    router=routes,
    handlers=HANDLERS,
)
