"""What other services may know of integration: its events (DESIGN §1, §5)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from mercato.platform.events import EventPayload
from mercato.platform.money import Money


class ExternalOrderImported(EventPayload):
    """An order from an external provider was imported for the first time or changed."""

    event_type: ClassVar[str] = "external_order.imported"

    external_id: str
    source: str
    status: str
    total: Money
    currency: str
    created: bool
    occurred_at: datetime


class ExternalProductSynced(EventPayload):
    """A provider's product was seen for the first time or changed (DESIGN §5 product sync).

    Catalog owns products: it consumes this event and upserts the product by
    `(source, external_id)`, ignoring an event whose `fetched_at` is older than the state it
    already applied (redeliveries and reordering across runs are harmless).
    """

    event_type: ClassVar[str] = "external_product.synced"

    source: str
    external_id: str
    name: str
    description: str
    price: Money
    currency: str = "USD"
    category: str | None = None
    brand: str | None = None
    stock: int
    created: bool
    run_id: str
    fetched_at: datetime
    occurred_at: datetime
