"""How the platform runs wallet: its routes, consumers and migrations."""

from __future__ import annotations

from pathlib import Path

from mercato.platform.migrations import MigrationHistory
from mercato.platform.service import ServiceModule
from mercato.wallet.api import build_router
from mercato.wallet.handlers import HANDLERS

MODULE = ServiceModule(
    name="wallet",
    migrations=MigrationHistory(Path(__file__).parent / "migrations", "alembic_version_wallet"),
    router=build_router,
    handlers=HANDLERS,
)
