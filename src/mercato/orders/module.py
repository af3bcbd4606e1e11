"""How the platform runs orders: its routes, consumers and migrations."""

from __future__ import annotations

from pathlib import Path

from mercato.orders.api import build_router
from mercato.orders.handlers import HANDLERS
from mercato.platform.migrations import MigrationHistory
from mercato.platform.service import ServiceModule

MODULE = ServiceModule(
    name="orders",
    migrations=MigrationHistory(Path(__file__).parent / "migrations", "alembic_version_orders"),
    router=build_router,
    handlers=HANDLERS,
)
