"""Orders' use cases for people: place an order (with `Idempotency-Key`), read orders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from mercato.orders.contracts import OrderLine, OrderPlaced
from mercato.orders.domain import (
    Order,
    OrderStatus,
    PaymentStep,
    PlacementRefused,
    StockStep,
    TimelineEntry,
    price_lines,
)
from mercato.orders.saga import record_event
from mercato.orders.store import (
    OrderFilter,
    OrderRepository,
    ReplicaRepository,
    TimelineRepository,
)
from mercato.platform import metrics
from mercato.platform.clock import utcnow
from mercato.platform.db import Database
from mercato.platform.errors import Invalid, NotFound
from mercato.platform.idempotency import IdempotencyKeys, fingerprint
from mercato.platform.ids import new_id_str
from mercato.platform.uow import UnitOfWorkFactory

log = structlog.get_logger("mercato.orders")

PLACE_SCOPE = "orders.place"


@dataclass(frozen=True)
class Placement:
    """What a user asks to buy, under which key."""

    user_id: str
    items: Sequence[tuple[str, int]]
    idempotency_key: str | None = None


async def place_order(uow_factory: UnitOfWorkFactory, placement: Placement) -> Order:
    """Price the lines from the replica, store the order `pending`, emit `order.placed`.

    A repeat with the same `Idempotency-Key` and the same items answers the same order.
    """
    key = placement.idempotency_key
    async with uow_factory() as uow:
        keys = IdempotencyKeys(uow.connection, PLACE_SCOPE)
        repo = uow.repository(OrderRepository)
        if key is not None:
            digest = fingerprint([[pid, qty] for pid, qty in placement.items])
            stored = await keys.claim(placement.user_id, key, digest)
            if stored is not None:
                earlier = await repo.get(str(stored.body["order_id"]))
                if earlier is None:  # pragma: no cover - orders are never deleted
                    raise NotFound("the order of this Idempotency-Key is gone")
                return earlier
        known = await uow.repository(ReplicaRepository).get_many([p for p, _ in placement.items])
        try:
            lines, total = price_lines(placement.items, known)
        except PlacementRefused as refused:
            raise Invalid.of(*refused.rules(), detail=str(refused)) from None
        now = utcnow()
        order = Order(
            id=new_id_str(),
            user_id=placement.user_id,
            status=OrderStatus.PENDING,
            lines=tuple(lines),
            total=total,
            payment=PaymentStep.PENDING,
            stock=StockStep.PENDING,
            fail_reason=None,
            created_at=now,
            updated_at=now,
        )
        await repo.add(order)
        placed = await uow.emit(
            OrderPlaced(
                order_id=order.id,
                user_id=order.user_id,
                items=[
                    OrderLine(product_id=x.product_id, quantity=x.quantity, unit_price=x.unit_price)
                    for x in lines
                ],
                total=total,
                occurred_at=now,
            ),
            subject=order.id,
        )
        await record_event(uow, order.id, placed)
        if key is not None:
            await keys.store(placement.user_id, key, 202, {"order_id": order.id})
    log.info("order placed", order_id=order.id, user_id=order.user_id)
    metrics.order_status(OrderStatus.PENDING.value)
    return order


async def get_order(database: Database, order_id: str, viewer: str | None) -> Order:
    """An order; 404 when it does not exist or belongs to someone else (`viewer` None: any)."""
    async with database.read() as conn:
        order = await OrderRepository(conn).get(order_id)
    if order is None or (viewer is not None and order.user_id != viewer):
        raise NotFound("no such order")
    return order


async def list_orders(
    database: Database, flt: OrderFilter, skip: int, limit: int
) -> tuple[list[Order], int]:
    """A page of orders, newest first."""
    async with database.read() as conn:
        return await OrderRepository(conn).page(flt, skip, limit)


async def get_timeline(
    database: Database, order_id: str, viewer: str | None
) -> tuple[Order, list[TimelineEntry]]:
    """An order and the events that moved it, oldest first; 404 as `get_order` says."""
    async with database.read() as conn:
        order = await OrderRepository(conn).get(order_id)
        if order is None or (viewer is not None and order.user_id != viewer):
            raise NotFound("no such order")
        return order, await TimelineRepository(conn).of(order_id)
