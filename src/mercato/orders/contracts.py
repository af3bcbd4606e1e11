"""What other services may know of orders: the saga's events (DESIGN §4)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel

from mercato.platform.events import EventPayload
from mercato.platform.money import Money


class OrderLine(BaseModel):
    """One line of a placed order, priced at placement."""

    product_id: str
    quantity: int
    unit_price: Money


class OrderPlaced(EventPayload):
    """An order was stored `pending`: wallet debits it, catalog reserves its stock."""

    event_type: ClassVar[str] = "order.placed"

    order_id: str
    user_id: str
    items: list[OrderLine]
    total: Money
    occurred_at: datetime


class OrderCompleted(EventPayload):
    """Payment and stock both succeeded."""

    event_type: ClassVar[str] = "order.completed"

    order_id: str
    user_id: str
    total: Money
    occurred_at: datetime


class OrderFailed(EventPayload):
    """The order failed: wallet refunds a debit, catalog releases a reservation it made."""

    event_type: ClassVar[str] = "order.failed"

    order_id: str
    user_id: str
    # insufficient_funds, no_wallet, out_of_stock, unknown_product or user_deleted
    reason: str
    occurred_at: datetime
