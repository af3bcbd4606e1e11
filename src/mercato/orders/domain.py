"""Orders' rules: pricing a placement and the saga of DESIGN §4 as a guarded state machine.

An order has two steps, payment and stock, each moving only along the edges below; the order's
status follows from them: the first rejection fails it, both successes complete it, and a
final status never changes again. Answers that arrive twice, late or out of order fall outside
the edges and change nothing.

    payment: pending ─┬─> debited ──> refunded        stock: pending ─┬─> reserved ──> released
                      └─> rejected                                    └─> rejected

No framework imports here (an import-linter contract keeps it so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from mercato.platform.errors import RuleBroken
from mercato.platform.money import MAX_AMOUNT

MAX_LINES = 1000
MAX_QUANTITY = 10_000


class OrderStatus(StrEnum):
    """Where the saga stands; `completed` and `failed` are final."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class PaymentStep(StrEnum):
    """Wallet's answers as orders recorded them."""

    PENDING = "pending"
    DEBITED = "debited"
    REJECTED = "rejected"
    REFUNDED = "refunded"


class StockStep(StrEnum):
    """Catalog's answers as orders recorded them."""

    PENDING = "pending"
    RESERVED = "reserved"
    REJECTED = "rejected"
    RELEASED = "released"


@dataclass(frozen=True)
class TimelineEntry:
    """One event that moved an order: its type, when it happened, and its tracing ids."""

    order_id: str
    event_id: str
    event_type: str
    occurred_at: datetime
    correlation_id: str
    causation_id: str | None
    source: str


PAYMENT_EDGES = frozenset(
    {
        (PaymentStep.PENDING, PaymentStep.DEBITED),
        (PaymentStep.PENDING, PaymentStep.REJECTED),
        (PaymentStep.DEBITED, PaymentStep.REFUNDED),
    }
)
STOCK_EDGES = frozenset(
    {
        (StockStep.PENDING, StockStep.RESERVED),
        (StockStep.PENDING, StockStep.REJECTED),
        (StockStep.RESERVED, StockStep.RELEASED),
    }
)


class Announce(StrEnum):
    """The event a transition makes orders emit."""

    COMPLETED = "order.completed"
    FAILED = "order.failed"


@dataclass(frozen=True)
class Line:
    """One line of an order, priced at placement (orders keep it whatever catalog does)."""

    product_id: str
    name: str
    quantity: int
    unit_price: Decimal

    @property
    def line_total(self) -> Decimal:
        """Quantity times unit price."""
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class Order:
    """An order and the state of its saga."""

    id: str
    user_id: str
    status: OrderStatus
    lines: tuple[Line, ...]
    total: Decimal
    payment: PaymentStep
    stock: StockStep
    fail_reason: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def is_payment_processed(self) -> bool:
        """Wallet debited the total (it may have been refunded since: see `payment`)."""
        return self.payment in (PaymentStep.DEBITED, PaymentStep.REFUNDED)

    @property
    def is_inventory_processed(self) -> bool:
        """Catalog took the stock (it may have been released since: see `stock`)."""
        return self.stock in (StockStep.RESERVED, StockStep.RELEASED)


@dataclass(frozen=True)
class Transition:
    """An order after an answer, and what to announce (None: nothing)."""

    order: Order
    changed: bool
    announce: Announce | None = None


def _settle(order: Order, reason: str | None, now: datetime) -> Transition:
    """Derive the status of a pending order from its steps."""
    order = replace(order, updated_at=now)
    if order.status is not OrderStatus.PENDING:
        return Transition(order, True)
    if order.payment is PaymentStep.REJECTED or order.stock is StockStep.REJECTED:
        failed = replace(order, status=OrderStatus.FAILED, fail_reason=reason)
        return Transition(failed, True, Announce.FAILED)
    if order.payment is PaymentStep.DEBITED and order.stock is StockStep.RESERVED:
        return Transition(replace(order, status=OrderStatus.COMPLETED), True, Announce.COMPLETED)
    return Transition(order, True)


def record_payment(
    order: Order, step: PaymentStep, now: datetime, reason: str | None = None
) -> Transition:
    """Apply wallet's answer; one outside `PAYMENT_EDGES` (a repeat, a late one) is ignored."""
    if (order.payment, step) not in PAYMENT_EDGES:
        return Transition(order, False)
    return _settle(replace(order, payment=step), reason, now)


def record_stock(
    order: Order, step: StockStep, now: datetime, reason: str | None = None
) -> Transition:
    """Apply catalog's answer; one outside `STOCK_EDGES` (a repeat, a late one) is ignored."""
    if (order.stock, step) not in STOCK_EDGES:
        return Transition(order, False)
    return _settle(replace(order, stock=step), reason, now)


def fail(order: Order, reason: str, now: datetime) -> Transition:
    """Fail a pending order from outside the saga (its user was deleted)."""
    if order.status is not OrderStatus.PENDING:
        return Transition(order, False)
    failed = replace(order, status=OrderStatus.FAILED, fail_reason=reason, updated_at=now)
    return Transition(failed, True, Announce.FAILED)


# --- placement -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaProduct:
    """What orders knows of a catalog product, from `product.*` events."""

    product_id: str
    name: str
    price: Decimal
    active: bool
    version: int
    deleted: bool = False


@dataclass(frozen=True)
class LineProblem:
    """Why one requested line cannot be ordered."""

    index: int
    field: str
    message: str


class PlacementRefused(ValueError):
    """The request cannot become an order; `problems` says which lines and why."""

    def __init__(self, problems: Sequence[LineProblem]) -> None:
        super().__init__("; ".join(f"items[{p.index}]: {p.message}" for p in problems))
        self.problems = list(problems)

    def rules(self) -> list[RuleBroken]:
        """Each problem as the rule it breaks, located in the request body."""
        return [
            RuleBroken(
                p.field,
                p.message,
                loc=("items",) if p.field == "items" else ("items", p.index, p.field),
            )
            for p in self.problems
        ]


def price_lines(
    requested: Sequence[tuple[str, int]], known: Mapping[str, ReplicaProduct]
) -> tuple[list[Line], Decimal]:
    """Price each line from the replica; refuse unknown, deleted or withdrawn products and a
    total beyond what an amount may be."""
    if not 1 <= len(requested) <= MAX_LINES:
        raise PlacementRefused([LineProblem(0, "items", f"1 to {MAX_LINES} lines")])
    problems: list[LineProblem] = []
    lines: list[Line] = []
    for index, (product_id, quantity) in enumerate(requested):
        product = known.get(product_id)
        if not 1 <= quantity <= MAX_QUANTITY:
            problems.append(LineProblem(index, "quantity", f"must be 1 to {MAX_QUANTITY}"))
        elif product is None or product.deleted:
            problems.append(LineProblem(index, "product_id", "no such product"))
        elif not product.active:
            problems.append(LineProblem(index, "product_id", "product is not on sale"))
        else:
            lines.append(Line(product_id, product.name, quantity, product.price))
    if problems:
        raise PlacementRefused(problems)
    total = sum((line.line_total for line in lines), Decimal("0.00"))
    if total > MAX_AMOUNT:
        raise PlacementRefused([LineProblem(0, "items", f"the total may not exceed {MAX_AMOUNT}")])
    return lines, total


def replica_applies(existing: ReplicaProduct | None, version: int) -> bool:
    """A product event updates the replica only if it is newer than what the replica holds."""
    return existing is None or version > existing.version
