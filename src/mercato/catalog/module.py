"""How the platform runs catalog: its routes, consumers and migrations."""

from __future__ import annotations

from pathlib import Path

from mercato.catalog.api import build_router
from mercato.catalog.handlers import HANDLERS
from mercato.platform.migrations import MigrationHistory
from mercato.platform.service import ServiceModule

MODULE = ServiceModule(
    name="catalog",
    migrations=MigrationHistory(Path(__file__).parent / "migrations", "alembic_version_catalog"),
    router=build_router,
    handlers=HANDLERS,
)
