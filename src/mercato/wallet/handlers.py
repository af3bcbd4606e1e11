"""Wallet's event consumers: wallets follow users; payments follow the order saga."""

from __future__ import annotations

from mercato.accounts.contracts import UserCreated, UserDeleted
from mercato.orders.contracts import OrderFailed, OrderPlaced
from mercato.platform.events import Envelope
from mercato.platform.service import ServiceContext, ServiceHandler
from mercato.platform.uow import UnitOfWork
from mercato.wallet import payments


async def on_user_created(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Open the new user's wallet."""
    await payments.open_wallet(uow, envelope.payload(UserCreated))


async def on_user_deleted(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Close the deleted user's wallet."""
    await payments.close_wallet(uow, envelope.payload(UserDeleted))


async def on_order_placed(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Debit the order's total, or reject it."""
    await payments.debit(uow, envelope.payload(OrderPlaced))


async def on_order_failed(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Refund a debit of the failed order (or tombstone it)."""
    await payments.refund(uow, envelope.payload(OrderFailed))


HANDLERS: dict[str, ServiceHandler] = {
    UserCreated.event_type: on_user_created,
    UserDeleted.event_type: on_user_deleted,
    OrderPlaced.event_type: on_order_placed,
    OrderFailed.event_type: on_order_failed,
}
