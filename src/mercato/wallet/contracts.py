"""What other services may know of wallet: payment events (DESIGN §1, §4)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from mercato.platform.events import EventPayload
from mercato.platform.money import Money

PaymentRejectReason = Literal["insufficient_funds", "no_wallet"]


class PaymentDebited(EventPayload):
    """The order's total was taken from the user's wallet."""

    event_type: ClassVar[str] = "payment.debited"

    order_id: str
    user_id: str
    amount: Money
    occurred_at: datetime


class PaymentRejected(EventPayload):
    """The order could not be paid; nothing was taken."""

    event_type: ClassVar[str] = "payment.rejected"

    order_id: str
    user_id: str
    reason: PaymentRejectReason
    occurred_at: datetime


class PaymentRefunded(EventPayload):
    """A debit of a failed order was given back."""

    event_type: ClassVar[str] = "payment.refunded"

    order_id: str
    user_id: str
    amount: Money
    occurred_at: datetime
