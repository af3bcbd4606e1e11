"""Catalog's event consumers: the order saga's stock steps (DESIGN §4) and synced products."""

from __future__ import annotations

from mercato.catalog import stock, sync
from mercato.integration.contracts import ExternalProductSynced
from mercato.orders.contracts import OrderFailed, OrderPlaced
from mercato.platform.events import Envelope
from mercato.platform.service import ServiceContext, ServiceHandler
from mercato.platform.uow import UnitOfWork


async def on_order_placed(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Reserve every line of the order, or reject it."""
    await stock.reserve(uow, envelope.payload(OrderPlaced))


async def on_order_failed(_: ServiceContext, envelope: Envelope, uow: UnitOfWork) -> None:
    """Release what was reserved for the order (or tombstone it)."""
    await stock.release(uow, envelope.payload(OrderFailed))


async def on_external_product_synced(
    _: ServiceContext, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Upsert a provider's product by `(source, external_id)`."""
    await sync.apply_external_product(uow, envelope.payload(ExternalProductSynced))


HANDLERS: dict[str, ServiceHandler] = {
    ExternalProductSynced.event_type: on_external_product_synced,
    OrderPlaced.event_type: on_order_placed,
    OrderFailed.event_type: on_order_failed,
}
