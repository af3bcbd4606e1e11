"""Orders' event consumers: the saga's answers, the product replica, deleted users.

Each saga answer also goes on its order's timeline, in the transaction that applies it.
"""

from __future__ import annotations

from mercato.accounts.contracts import UserDeleted
from mercato.catalog.contracts import (
    ProductDeleted,
    ProductUpserted,
    StockRejected,
    StockReleased,
    StockReserved,
)
from mercato.orders import saga
from mercato.platform.events import Envelope
from mercato.platform.service import ServiceContext, ServiceHandler
from mercato.platform.uow import UnitOfWork
from mercato.wallet.contracts import PaymentDebited, PaymentRefunded, PaymentRejected


async def on_payment_debited(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Wallet took the total."""
    event = envelope.payload(PaymentDebited)
    await saga.record_event(uow, event.order_id, envelope)
    await saga.payment_debited(uow, event)


async def on_payment_rejected(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Wallet refused the order."""
    event = envelope.payload(PaymentRejected)
    await saga.record_event(uow, event.order_id, envelope)
    await saga.payment_rejected(uow, event)


async def on_payment_refunded(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Wallet refunded a failed order."""
    event = envelope.payload(PaymentRefunded)
    await saga.record_event(uow, event.order_id, envelope)
    await saga.payment_refunded(uow, event)


async def on_stock_reserved(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Catalog took the stock."""
    event = envelope.payload(StockReserved)
    await saga.record_event(uow, event.order_id, envelope)
    await saga.stock_reserved(uow, event)


async def on_stock_rejected(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Catalog refused the order."""
    event = envelope.payload(StockRejected)
    await saga.record_event(uow, event.order_id, envelope)
    await saga.stock_rejected(uow, event)


async def on_stock_released(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Catalog released a failed order's stock."""
    event = envelope.payload(StockReleased)
    await saga.record_event(uow, event.order_id, envelope)
    await saga.stock_released(uow, event)


async def on_product_upserted(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Update the product replica."""
    await saga.product_upserted(uow, envelope.payload(ProductUpserted))


async def on_product_deleted(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Tombstone the product in the replica."""
    await saga.product_deleted(uow, envelope.payload(ProductDeleted))


async def on_user_deleted(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Fail the deleted user's pending orders."""
    await saga.user_deleted(uow, envelope.payload(UserDeleted))


HANDLERS: dict[str, ServiceHandler] = {
    PaymentDebited.event_type: on_payment_debited,
    PaymentRejected.event_type: on_payment_rejected,
    PaymentRefunded.event_type: on_payment_refunded,
    StockReserved.event_type: on_stock_reserved,
    StockRejected.event_type: on_stock_rejected,
    StockReleased.event_type: on_stock_released,
    ProductUpserted.event_type: on_product_upserted,
    ProductDeleted.event_type: on_product_deleted,
    UserDeleted.event_type: on_user_deleted,
}
