"""How the platform runs orders: its routes, consumers and migrations."""

from __future__ import annotations

from pathlib import Path

from mercato.accounts.contracts import UserDeleted
from mercato.catalog.contracts import (
    ProductDeleted,
    ProductUpserted,
    StockRejected,
    StockReleased,
    StockReserved,
)
from mercato.orders import saga
from mercato.orders.api import build_router
from mercato.platform.migrations import MigrationHistory
from mercato.platform.service import ServiceModule
from mercato.wallet.contracts import PaymentDebited, PaymentRefunded, PaymentRejected

MODULE = ServiceModule(
    name="orders",
    migrations=MigrationHistory(Path(__file__).parent / "migrations", "alembic_version_orders"),
    router=build_router,
    handlers={
        # The saga's answers (each also goes on its order's timeline).
        PaymentDebited: saga.payment_debited,
        PaymentRejected: saga.payment_rejected,
        PaymentRefunded: saga.payment_refunded,
        StockReserved: saga.stock_reserved,
        StockRejected: saga.stock_rejected,
        StockReleased: saga.stock_released,
        # The product replica, and deleted users' pending orders.
        ProductUpserted: saga.product_upserted,
        ProductDeleted: saga.product_deleted,
        UserDeleted: saga.user_deleted,
    },
)
