"""How the platform runs wallet: its routes, consumers and migrations."""

from __future__ import annotations

from pathlib import Path

from mercato.accounts.contracts import UserCreated, UserDeleted
from mercato.orders.contracts import OrderFailed, OrderPlaced
from mercato.platform.migrations import MigrationHistory
from mercato.platform.service import ServiceModule
from mercato.wallet import payments
from mercato.wallet.api import build_router

MODULE = ServiceModule(
    name="wallet",
    migrations=MigrationHistory(Path(__file__).parent / "migrations", "alembic_version_wallet"),
    router=build_router,
    handlers={
        # Wallets follow users; payments follow the order saga.
        UserCreated: payments.open_wallet,
        UserDeleted: payments.close_wallet,
        OrderPlaced: payments.debit,
        OrderFailed: payments.refund,
    },
)
