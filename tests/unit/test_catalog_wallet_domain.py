"""Catalog's and wallet's rules, without I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from mercato.catalog.domain import (
    Product,
    ReservationState,
    SyncOutcome,
    apply_changes,
    full_state,
    quantities_by_product,
    release_on_failure,
    sync_outcome,
)
from mercato.wallet.domain import PaymentState, RuleBroken, check_topup, refund_on_failure

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BOOK = Product(
    "p", "Book", None, None, None, Decimal("20.00"), "USD", 1, True, None, None, "local", 1,
    NOW, NOW,
)  # fmt: skip


def test_status_is_available_only_when_active_with_stock() -> None:
    assert BOOK.status == "available"
    assert replace(BOOK, stock=0).status == "unavailable"
    assert replace(BOOK, active=False).status == "unavailable"


def test_changes_bump_the_version_only_when_something_differs() -> None:
    assert apply_changes(BOOK, {"price": Decimal("20.00")}, NOW) is BOOK
    changed = apply_changes(BOOK, {"active": False}, NOW)
    assert changed.version == 2 and not changed.active
    with pytest.raises(ValueError, match="not editable"):
        apply_changes(BOOK, {"source": "partner"}, NOW)
    assert full_state({"name": "X", "price": 1})["stock"] == 0  # PUT resets omitted fields


def test_sync_outcomes() -> None:
    assert sync_outcome(None, BOOK) is SyncOutcome.CREATED
    assert sync_outcome(BOOK, BOOK) is SyncOutcome.UNCHANGED
    assert sync_outcome(BOOK, replace(BOOK, version=2)) is SyncOutcome.UPDATED


def test_quantities_are_summed_per_product_in_lock_order() -> None:
    assert list(quantities_by_product([("b", 1), ("a", 2), ("b", 3)]).items()) == [
        ("a", 2),
        ("b", 4),
    ]
    with pytest.raises(ValueError):
        quantities_by_product([("a", 0)])


def test_compensation_happens_once_and_only_for_what_was_taken() -> None:
    assert release_on_failure(None) == (False, ReservationState.CANCELLED)
    assert release_on_failure(ReservationState.RESERVED) == (True, ReservationState.RELEASED)
    for state in (ReservationState.REJECTED, ReservationState.RELEASED, ReservationState.CANCELLED):
        assert release_on_failure(state) == (False, state)
    assert refund_on_failure(None) == (False, PaymentState.CANCELLED)
    assert refund_on_failure(PaymentState.DEBITED) == (True, PaymentState.REFUNDED)
    assert refund_on_failure(PaymentState.REFUNDED) == (False, PaymentState.REFUNDED)


@pytest.mark.parametrize(
    ("amount", "balance", "limit"),
    [("0", "0", "100"), ("-1", "0", None), ("100.01", "0", "100"), ("1", "1000000000", None)],
)
def test_bad_top_ups_are_refused(amount: str, balance: str, limit: str | None) -> None:
    with pytest.raises(RuleBroken):
        check_topup(Decimal(amount), Decimal(balance), limit=Decimal(limit) if limit else None)
    check_topup(Decimal("100"), Decimal("0"), limit=Decimal("100"))
