"""Orders' side of the saga: record each answer, announce completion or failure.

Each handler locks the order row, applies a transition of `domain` and, when it announces one,
emits `order.completed` / `order.failed` in the same transaction. A duplicate or late answer is
outside the state machine's edges and changes nothing.

A late success after a failure needs no action here: `order.failed` was emitted when the order
failed, and wallet and catalog undo what they did for it whichever of `order.placed` and
`order.failed` they see first (see `wallet.payments` and `catalog.stock`).

The log lines here run inside the consumer's transaction, which may still roll back (the worker
dies before the commit, another handler of the same batch fails): they say what this attempt
decided ("completing", "failing"), never that it happened. The announcement committed with the
order is the record that it did; a rolled-back attempt is simply decided again on redelivery.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import structlog

from mercato.accounts.contracts import UserDeleted
from mercato.catalog.contracts import (
    ProductDeleted,
    ProductUpserted,
    StockRejected,
    StockReleased,
    StockReserved,
)
from mercato.orders.contracts import OrderCompleted, OrderFailed
from mercato.orders.domain import (
    Announce,
    Order,
    PaymentStep,
    ReplicaProduct,
    StockStep,
    TimelineEntry,
    Transition,
    fail,
    record_payment,
    record_stock,
    replica_applies,
)
from mercato.orders.store import OrderRepository, ReplicaRepository, TimelineRepository
from mercato.platform import metrics
from mercato.platform.clock import utcnow
from mercato.platform.events import Envelope
from mercato.platform.uow import UnitOfWork
from mercato.wallet.contracts import PaymentDebited, PaymentRefunded, PaymentRejected

log = structlog.get_logger("mercato.orders")

USER_DELETED = "user_deleted"


async def record_event(uow: UnitOfWork, order_id: str, envelope: Envelope) -> None:
    """Add an event that concerns `order_id` to its timeline, in the transaction at hand."""
    await uow.repository(TimelineRepository).add(
        TimelineEntry(
            order_id=order_id,
            event_id=envelope.id,
            event_type=envelope.type,
            occurred_at=envelope.occurred_at,
            correlation_id=envelope.correlation_id,
            causation_id=envelope.causation_id,
            source=envelope.source,
        )
    )


async def _announce(uow: UnitOfWork, transition: Transition) -> None:
    order = transition.order
    if transition.announce is None:
        return
    uow.after_commit(lambda: metrics.order_status(order.status.value, order.created_at))
    if transition.announce is Announce.COMPLETED:
        envelope = await uow.emit(
            OrderCompleted(
                order_id=order.id,
                user_id=order.user_id,
                total=order.total,
                occurred_at=order.updated_at,
            ),
            subject=order.id,
        )
        log.info("completing order", order_id=order.id)
    else:
        envelope = await uow.emit(
            OrderFailed(
                order_id=order.id,
                user_id=order.user_id,
                reason=order.fail_reason or "failed",
                occurred_at=order.updated_at,
            ),
            subject=order.id,
        )
        log.info("failing order", order_id=order.id, reason=order.fail_reason)
    await record_event(uow, order.id, envelope)


async def _apply(
    uow: UnitOfWork, envelope: Envelope, order_id: str, step: Callable[[Order], Transition]
) -> None:
    # Every answer goes on its order's timeline, in the transaction that applies it.
    await record_event(uow, order_id, envelope)
    repo = uow.repository(OrderRepository)
    order = await repo.get(order_id, for_update=True)
    if order is None:
        # Answers follow `order.placed`, which commits with its order: this is not ours.
        log.warning("answer for an unknown order ignored", order_id=order_id)
        return
    transition = step(order)
    if not transition.changed:
        return
    await repo.save_state(transition.order)
    await _announce(uow, transition)


async def payment_debited(uow: UnitOfWork, event: PaymentDebited, *, envelope: Envelope) -> None:
    """Wallet took the total."""
    await _apply(
        uow, envelope, event.order_id, lambda o: record_payment(o, PaymentStep.DEBITED, utcnow())
    )


async def payment_rejected(uow: UnitOfWork, event: PaymentRejected, *, envelope: Envelope) -> None:
    """Wallet refused: the order fails with its reason (unless it already ended)."""
    await _apply(
        uow,
        envelope,
        event.order_id,
        lambda o: record_payment(o, PaymentStep.REJECTED, utcnow(), event.reason),
    )


async def payment_refunded(uow: UnitOfWork, event: PaymentRefunded, *, envelope: Envelope) -> None:
    """Wallet gave a failed order's debit back."""
    await _apply(
        uow, envelope, event.order_id, lambda o: record_payment(o, PaymentStep.REFUNDED, utcnow())
    )


async def stock_reserved(uow: UnitOfWork, event: StockReserved, *, envelope: Envelope) -> None:
    """Catalog took the stock."""
    await _apply(
        uow, envelope, event.order_id, lambda o: record_stock(o, StockStep.RESERVED, utcnow())
    )


async def stock_rejected(uow: UnitOfWork, event: StockRejected, *, envelope: Envelope) -> None:
    """Catalog refused: the order fails with its reason (unless it already ended)."""
    await _apply(
        uow,
        envelope,
        event.order_id,
        lambda o: record_stock(o, StockStep.REJECTED, utcnow(), event.reason),
    )


async def stock_released(uow: UnitOfWork, event: StockReleased, *, envelope: Envelope) -> None:
    """Catalog gave a failed order's stock back."""
    await _apply(
        uow, envelope, event.order_id, lambda o: record_stock(o, StockStep.RELEASED, utcnow())
    )


async def user_deleted(uow: UnitOfWork, event: UserDeleted) -> None:
    """A deleted user's pending orders fail (wallet and catalog then undo their part)."""
    repo = uow.repository(OrderRepository)
    for order in await repo.pending_of(event.user_id):
        transition = fail(order, USER_DELETED, utcnow())
        await repo.save_state(transition.order)
        await _announce(uow, transition)


async def product_upserted(uow: UnitOfWork, event: ProductUpserted) -> None:
    """Keep the replica's name, price and active flag, ignoring a state older than ours."""
    replica = uow.repository(ReplicaRepository)
    existing = await replica.get(event.product_id, for_update=True)
    if replica_applies(existing, event.version):
        await replica.put(
            ReplicaProduct(
                product_id=event.product_id,
                name=event.name,
                price=event.price,
                active=event.active,
                version=event.version,
            )
        )


async def product_deleted(uow: UnitOfWork, event: ProductDeleted) -> None:
    """Tombstone the product so it can no longer be ordered (old orders keep their lines)."""
    replica = uow.repository(ReplicaRepository)
    existing = await replica.get(event.product_id, for_update=True)
    if replica_applies(existing, event.version):
        await replica.put(
            ReplicaProduct(
                product_id=event.product_id,
                name=existing.name if existing else "",
                price=existing.price if existing else Decimal("0.00"),
                active=False,
                version=event.version,
                deleted=True,
            )
        )
