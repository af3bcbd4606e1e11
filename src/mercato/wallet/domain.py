"""Wallet's rules: top-up limits, what a payment step does for an order, ledger kinds.

No framework imports here (an import-linter contract keeps it so).
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from mercato.platform.errors import RuleBroken
from mercato.platform.money import MAX_AMOUNT

ZERO = Decimal("0.00")


class WalletStatus(StrEnum):
    """A wallet is open from `user.created` until `user.deleted` closes it."""

    OPEN = "open"
    CLOSED = "closed"


class EntryKind(StrEnum):
    """Why the balance moved; debits are negative, the others positive."""

    TOPUP = "topup"
    DEBIT = "debit"
    REFUND = "refund"


class PaymentState(StrEnum):
    """Wallet's record of one order, which makes every step idempotent by order id.

    `cancelled` is a tombstone: the order failed before wallet saw it placed, so a late
    `order.placed` must not debit.
    """

    DEBITED = "debited"
    REJECTED = "rejected"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


def check_topup(amount: Decimal, balance: Decimal, *, limit: Decimal | None) -> None:
    """A top-up is positive, within the per-top-up `limit` (None: uncapped, for admins), and
    keeps the balance within what an amount may be."""
    if amount <= ZERO:
        raise RuleBroken("amount", "must be greater than 0")
    if limit is not None and amount > limit:
        raise RuleBroken("amount", f"must not exceed {limit} per top-up")
    if balance + amount > MAX_AMOUNT:
        raise RuleBroken("amount", f"the balance may not exceed {MAX_AMOUNT}")


def refund_on_failure(state: PaymentState | None) -> tuple[bool, PaymentState]:
    """On `order.failed`: whether to give the debit back, and the state to record.

    Only a debit wallet made is refunded, and only once; an order wallet never saw is
    tombstoned so its late `order.placed` takes nothing.
    """
    if state is None:
        return False, PaymentState.CANCELLED
    if state is PaymentState.DEBITED:
        return True, PaymentState.REFUNDED
    return False, state
