"""Catalog's side of the order saga: reserve every line or none, release for a failed order.

Each step is keyed by order id in the reservations table, in the same transaction as the stock
change and the answer event, so redelivery and any order of arrival keep stock exact:

- `order.placed` first → reserve (or reject); a later `order.failed` releases a reservation;
- `order.failed` first → a `cancelled` tombstone; the late `order.placed` takes nothing.

The log lines here run inside the consumer's transaction, which may still roll back (the worker
dies before the commit, another handler of the same batch fails): they say what this attempt
decided ("reserving", "releasing"), never that it happened. The answer event committed with the
change is the record that it did; a rolled-back attempt is simply decided again on redelivery.
"""

from __future__ import annotations

import structlog

from mercato.catalog.contracts import StockLine, StockRejected, StockReleased, StockReserved
from mercato.catalog.domain import ReservationState, quantities_by_product, release_on_failure
from mercato.catalog.store import ProductRepository, ReservationRepository
from mercato.orders.contracts import OrderFailed, OrderPlaced
from mercato.platform.clock import utcnow
from mercato.platform.uow import UnitOfWork

log = structlog.get_logger("mercato.catalog")


class _Rejected(Exception):
    """Rolls back the partial reservation of an order (a savepoint), with the reason."""

    def __init__(self, reason: str, product_id: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.product_id = product_id


def _lines(items: dict[str, int]) -> list[StockLine]:
    return [StockLine(product_id=pid, quantity=q) for pid, q in items.items()]


async def reserve(uow: UnitOfWork, placed: OrderPlaced) -> None:
    """Take the stock of every line of a placed order, or none of it, and answer."""
    now = utcnow()
    reservations = uow.repository(ReservationRepository)
    if not await reservations.claim(placed.order_id, ReservationState.RESERVED, now):
        return  # already reserved, rejected, released or cancelled: nothing more to do
    wanted = quantities_by_product((line.product_id, line.quantity) for line in placed.items)
    products = uow.repository(ProductRepository)
    try:
        async with uow.connection.begin_nested():
            for product_id, quantity in wanted.items():
                if not await products.take_stock(product_id, quantity):
                    exists = await products.existing_ids([product_id])
                    # A withdrawn product is unavailable like one sold out (DESIGN has no
                    # third reason; `product_id` says which line failed).
                    raise _Rejected("out_of_stock" if exists else "unknown_product", product_id)
    except _Rejected as rejected:
        await reservations.set(
            placed.order_id, ReservationState.REJECTED, now, reason=rejected.reason
        )
        await uow.emit(
            StockRejected(
                order_id=placed.order_id,
                reason="out_of_stock" if rejected.reason == "out_of_stock" else "unknown_product",
                product_id=rejected.product_id,
                occurred_at=now,
            ),
            subject=placed.order_id,
        )
        log.info("rejecting stock", order_id=placed.order_id, reason=rejected.reason)
        return
    await reservations.set(placed.order_id, ReservationState.RESERVED, now, items=wanted)
    log.info("reserving stock", order_id=placed.order_id, lines=len(wanted))
    await uow.emit(
        StockReserved(order_id=placed.order_id, items=_lines(wanted), occurred_at=now),
        subject=placed.order_id,
    )


async def release(uow: UnitOfWork, failed: OrderFailed) -> None:
    """Give back what catalog reserved for a failed order (once), or tombstone the order."""
    now = utcnow()
    reservations = uow.repository(ReservationRepository)
    if await reservations.claim(failed.order_id, ReservationState.CANCELLED, now):
        return  # never reserved; the tombstone stops a late `order.placed`
    reservation = await reservations.get(failed.order_id, for_update=True)
    assert reservation is not None  # claimed by someone else, committed before we read it
    give_back, state = release_on_failure(reservation.state)
    if not give_back:
        return
    products = uow.repository(ProductRepository)
    for product_id, quantity in sorted(reservation.items.items()):
        await products.give_back(product_id, quantity)
    await reservations.set(failed.order_id, state, now)
    await uow.emit(
        StockReleased(order_id=failed.order_id, items=_lines(reservation.items), occurred_at=now),
        subject=failed.order_id,
    )
    log.info("releasing stock", order_id=failed.order_id, lines=len(reservation.items))
