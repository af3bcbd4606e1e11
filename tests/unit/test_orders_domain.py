"""Orders' saga state machine and pricing, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from itertools import permutations

import pytest

from mercato.orders.domain import (
    MAX_LINES,
    Announce,
    Order,
    OrderStatus,
    PaymentStep,
    PlacementRefused,
    ReplicaProduct,
    StockStep,
    Transition,
    fail,
    price_lines,
    record_payment,
    record_stock,
    replica_applies,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PENDING = Order(
    "o", "u", OrderStatus.PENDING, (), Decimal("1"), PaymentStep.PENDING, StockStep.PENDING,
    None, NOW, NOW,
)  # fmt: skip
ANSWERS = {
    "debited": lambda o: record_payment(o, PaymentStep.DEBITED, NOW),
    "no_money": lambda o: record_payment(o, PaymentStep.REJECTED, NOW, "insufficient_funds"),
    "reserved": lambda o: record_stock(o, StockStep.RESERVED, NOW),
    "sold_out": lambda o: record_stock(o, StockStep.REJECTED, NOW, "out_of_stock"),
}


def run(order: Order, names: tuple[str, ...]) -> tuple[Order, list[Announce]]:
    announced = []
    for name in names:
        t: Transition = ANSWERS[name](order)
        order = t.order
        if t.announce:
            announced.append(t.announce)
    return order, announced


@pytest.mark.parametrize("pay", ["debited", "no_money"])
@pytest.mark.parametrize("stock", ["reserved", "sold_out"])
def test_any_order_of_answers_and_repeats_announces_exactly_once(pay: str, stock: str) -> None:
    outcomes = set()
    for sequence in set(permutations([pay, stock, pay, stock])):
        order, announced = run(PENDING, sequence)
        assert len(announced) == 1, sequence
        outcomes.add((order.status, announced[0]))
    if (pay, stock) == ("debited", "reserved"):
        assert outcomes == {(OrderStatus.COMPLETED, Announce.COMPLETED)}
    else:
        assert outcomes == {(OrderStatus.FAILED, Announce.FAILED)}


def test_first_rejection_gives_the_reason_and_a_late_success_changes_no_status() -> None:
    order, _ = run(PENDING, ("sold_out", "no_money", "debited"))
    assert order.fail_reason == "out_of_stock"
    assert order.payment is PaymentStep.REJECTED  # the late debit is outside the edges
    order, _ = run(PENDING, ("no_money", "reserved"))
    assert order.status is OrderStatus.FAILED and order.stock is StockStep.RESERVED
    released = record_stock(order, StockStep.RELEASED, NOW)
    assert released.changed and released.announce is None
    assert released.order.is_inventory_processed  # taken once, then given back


def test_final_orders_do_not_move_and_only_pending_orders_fail_from_outside() -> None:
    done, _ = run(PENDING, ("debited", "reserved"))
    assert not record_payment(done, PaymentStep.REJECTED, NOW).changed
    assert not fail(done, "user_deleted", NOW).changed
    failed = fail(PENDING, "user_deleted", NOW)
    assert failed.announce is Announce.FAILED and failed.order.fail_reason == "user_deleted"
    assert not record_stock(PENDING, StockStep.RELEASED, NOW).changed  # nothing to release


def test_lines_are_priced_from_the_replica() -> None:
    known = {
        "a": ReplicaProduct("a", "A", Decimal("19.99"), True, 1),
        "b": ReplicaProduct("b", "B", Decimal("5.00"), True, 3),
    }
    lines, total = price_lines([("a", 2), ("b", 1)], known)
    assert [line.line_total for line in lines] == [Decimal("39.98"), Decimal("5.00")]
    assert total == Decimal("44.98")


@pytest.mark.parametrize(
    ("requested", "field"),
    [
        ([("missing", 1)], "product_id"),
        ([("gone", 1)], "product_id"),
        ([("off", 1)], "product_id"),
        ([("a", 0)], "quantity"),
        ([], "items"),
        ([("a", 1)] * (MAX_LINES + 1), "items"),
        ([("dear", 10_000)], "items"),  # the total would pass the largest amount
    ],
)
def test_placements_that_cannot_be_priced_are_refused(
    requested: list[tuple[str, int]], field: str
) -> None:
    known = {
        "a": ReplicaProduct("a", "A", Decimal("1"), True, 1),
        "gone": ReplicaProduct("gone", "G", Decimal("1"), False, 2, deleted=True),
        "off": ReplicaProduct("off", "O", Decimal("1"), False, 2),
        "dear": ReplicaProduct("dear", "D", Decimal("999999999"), True, 1),
    }
    with pytest.raises(PlacementRefused) as refused:
        price_lines(requested, known)
    assert refused.value.problems[0].field == field


def test_replica_takes_only_newer_versions() -> None:
    held = ReplicaProduct("a", "A", Decimal("1"), True, 3)
    assert replica_applies(None, 1)
    assert replica_applies(held, 4)
    assert not replica_applies(held, 3) and not replica_applies(held, 2)
