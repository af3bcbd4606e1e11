"""What other services may know of integration: its events."""

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
