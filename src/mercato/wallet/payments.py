"""Wallet's side of the order saga and of the user lifecycle (DESIGN §4).

Each order step is keyed by order id in `order_payments`, in the same transaction as the
balance change, its ledger entry and the answer event, so redelivery and any order of arrival
keep balances exact:

- `order.placed` first → debit (or reject); a later `order.failed` refunds a debit once;
- `order.failed` first → a `cancelled` tombstone; the late `order.placed` takes nothing.

The log lines here run inside the consumer's transaction, which may still roll back (the worker
dies before the commit, another handler of the same batch fails): they say what this attempt
decided ("debiting", "refunding"), never that it happened. The answer event committed with the
change is the record that it did; a rolled-back attempt is simply decided again on redelivery.
"""

from __future__ import annotations

import structlog

from mercato.accounts.contracts import UserCreated, UserDeleted
from mercato.orders.contracts import OrderFailed, OrderPlaced
from mercato.platform.clock import utcnow
from mercato.platform.uow import UnitOfWork
from mercato.wallet.contracts import PaymentDebited, PaymentRefunded, PaymentRejected
from mercato.wallet.domain import EntryKind, PaymentState, WalletStatus, refund_on_failure
from mercato.wallet.store import WalletRepository

log = structlog.get_logger("mercato.wallet")


async def open_wallet(uow: UnitOfWork, created: UserCreated) -> None:
    """Every user gets an empty wallet (a repeat, or a user already deleted, changes nothing)."""
    await uow.repository(WalletRepository).open(created.user_id, utcnow())


async def close_wallet(uow: UnitOfWork, deleted: UserDeleted) -> None:
    """A deleted user's wallet is closed: no more debits or top-ups; its ledger is kept."""
    await uow.repository(WalletRepository).close(deleted.user_id, utcnow())


async def debit(uow: UnitOfWork, placed: OrderPlaced) -> None:
    """Take the order's total from the user's wallet, or reject the order."""
    now = utcnow()
    repo = uow.repository(WalletRepository)
    if not await repo.claim_payment(placed.order_id, placed.user_id, PaymentState.DEBITED, now):
        return  # already debited, rejected, refunded or cancelled: nothing more to do
    wallet = await repo.get(placed.user_id)
    new_balance = None
    if wallet is not None and wallet.status is WalletStatus.OPEN:
        new_balance = await repo.debit(placed.user_id, placed.total, now, placed.order_id)
    if new_balance is None:
        reason = (
            "no_wallet"
            if wallet is None or wallet.status is WalletStatus.CLOSED
            else "insufficient_funds"
        )
        await repo.set_payment(placed.order_id, PaymentState.REJECTED, now, reason=reason)
        await uow.emit(
            PaymentRejected(
                order_id=placed.order_id, user_id=placed.user_id, reason=reason, occurred_at=now
            ),
            subject=placed.order_id,
        )
        log.info("rejecting payment", order_id=placed.order_id, reason=reason)
        return
    await repo.set_payment(placed.order_id, PaymentState.DEBITED, now, amount=placed.total)
    log.info("debiting payment", order_id=placed.order_id, amount=str(placed.total))
    await uow.emit(
        PaymentDebited(
            order_id=placed.order_id, user_id=placed.user_id, amount=placed.total, occurred_at=now
        ),
        subject=placed.order_id,
    )


async def refund(uow: UnitOfWork, failed: OrderFailed) -> None:
    """Give back the debit of a failed order (once), or tombstone the order."""
    now = utcnow()
    repo = uow.repository(WalletRepository)
    if await repo.claim_payment(failed.order_id, failed.user_id, PaymentState.CANCELLED, now):
        return  # never debited; the tombstone stops a late `order.placed`
    payment = await repo.payment(failed.order_id, for_update=True)
    assert payment is not None  # claimed by someone else, committed before we read it
    give_back, state = refund_on_failure(payment.state)
    if not give_back:
        return
    # Refunded even to a closed wallet: a failed order leaves the balance as it was.
    await repo.credit(payment.user_id, payment.amount, EntryKind.REFUND, now, failed.order_id)
    await repo.set_payment(failed.order_id, state, now)
    await uow.emit(
        PaymentRefunded(
            order_id=failed.order_id,
            user_id=payment.user_id,
            amount=payment.amount,
            occurred_at=now,
        ),
        subject=failed.order_id,
    )
    log.info("refunding payment", order_id=failed.order_id, amount=str(payment.amount))
