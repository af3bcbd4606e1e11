"""How the platform runs catalog: its routes, consumers and migrations."""

from __future__ import annotations

from pathlib import Path

from mercato.catalog import stock, sync
from mercato.catalog.api import build_router
from mercato.integration.contracts import ExternalProductSynced
from mercato.orders.contracts import OrderFailed, OrderPlaced
from mercato.platform.migrations import MigrationHistory
from mercato.platform.service import ServiceModule

MODULE = ServiceModule(
    name="catalog",
    migrations=MigrationHistory(Path(__file__).parent / "migrations", "alembic_version_catalog"),
    router=build_router,
    handlers={
        # The order saga's stock steps (DESIGN §4), and the provider's products.
        OrderPlaced: stock.reserve,
        OrderFailed: stock.release,
        ExternalProductSynced: sync.apply_external_product,
    },
)
