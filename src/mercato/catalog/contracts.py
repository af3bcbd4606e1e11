"""What other services may know of catalog: product and stock events (DESIGN §1, §4), and the
CSV representation of the bulk export (DESIGN §2, §5)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel

from mercato.platform.events import EventPayload
from mercato.platform.money import Money

StockRejectReason = Literal["out_of_stock", "unknown_product"]

# `GET /api/v1/products/export` with `Accept: text/csv`: a header row with these columns, then
# one row per product (RFC 4180, `\r\n` line ends), in `created_at, id` order. Text cells
# that start with one of FORMULA_TRIGGERS get a leading `'` (OWASP CSV injection) unless the
# request says `?neutralise_formulas=false`.
EXPORT_CSV = "text/csv"
EXPORT_CSV_HEADER = (
    "Product ID",
    "Product Name",
    "Description",
    "Price",
    "Status",
    "Customer ID",
    "Created Date",
)
FORMULA_TRIGGERS = frozenset({"=", "+", "-", "@", "\t", "\r"})


class ProductUpserted(EventPayload):
    """A product was created or changed; its whole current state."""

    event_type: ClassVar[str] = "product.upserted"

    product_id: str
    name: str
    price: Money
    currency: str = "USD"
    active: bool
    stock: int
    source: str = "local"
    external_id: str | None = None
    # Grows with each change of the product, so a replica ignores an older state.
    version: int
    occurred_at: datetime


class ProductDeleted(EventPayload):
    """A product was deleted."""

    event_type: ClassVar[str] = "product.deleted"

    product_id: str
    version: int
    occurred_at: datetime


class StockLine(BaseModel):
    """A quantity of one product."""

    product_id: str
    quantity: int


class StockReserved(EventPayload):
    """Every line of an order was reserved (stock taken)."""

    event_type: ClassVar[str] = "stock.reserved"

    order_id: str
    items: list[StockLine]
    occurred_at: datetime


class StockRejected(EventPayload):
    """The order's stock could not be reserved; nothing was taken."""

    event_type: ClassVar[str] = "stock.rejected"

    order_id: str
    reason: StockRejectReason
    product_id: str | None = None
    occurred_at: datetime


class StockReleased(EventPayload):
    """A reservation of a failed order was given back."""

    event_type: ClassVar[str] = "stock.released"

    order_id: str
    items: list[StockLine]
    occurred_at: datetime
