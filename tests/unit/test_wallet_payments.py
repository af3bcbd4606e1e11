"""Wallet's saga steps run over a fake unit of work: the use cases name their repository
through `uow.repository(...)`, so an in-memory one stands in and no database is needed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from mercato.accounts.contracts import UserCreated
from mercato.orders.contracts import OrderFailed, OrderPlaced
from mercato.platform.clock import utcnow
from mercato.platform.events import EventPayload
from mercato.wallet import payments
from mercato.wallet.contracts import PaymentDebited, PaymentRefunded, PaymentRejected
from mercato.wallet.domain import EntryKind, PaymentState, WalletStatus
from mercato.wallet.store import Payment, Wallet, WalletRepository

NOW = utcnow()


@dataclass
class FakeWallets:
    """`WalletRepository`'s answers, kept in dicts."""

    wallets: dict[str, Wallet] = field(default_factory=dict)
    payments: dict[str, Payment] = field(default_factory=dict)

    async def open(self, user_id: str, now: datetime) -> bool:
        if user_id in self.wallets:
            return False
        self.wallets[user_id] = Wallet(user_id, WalletStatus.OPEN, Decimal("0.00"))
        return True

    async def get(self, user_id: str, *, for_update: bool = False) -> Wallet | None:
        return self.wallets.get(user_id)

    async def credit(
        self, user_id: str, amount: Decimal, kind: EntryKind, now: datetime, order_id: str | None
    ) -> Decimal:
        wallet = self.wallets[user_id]
        self.wallets[user_id] = replace(wallet, balance=wallet.balance + amount)
        return self.wallets[user_id].balance

    async def debit(
        self, user_id: str, amount: Decimal, now: datetime, order_id: str
    ) -> Decimal | None:
        wallet = self.wallets[user_id]
        if wallet.status is not WalletStatus.OPEN or wallet.balance < amount:
            return None
        self.wallets[user_id] = replace(wallet, balance=wallet.balance - amount)
        return self.wallets[user_id].balance

    async def claim_payment(
        self, order_id: str, user_id: str, state: PaymentState, now: datetime
    ) -> bool:
        if order_id in self.payments:
            return False
        self.payments[order_id] = Payment(order_id, user_id, state, Decimal("0.00"))
        return True

    async def payment(self, order_id: str, *, for_update: bool = False) -> Payment | None:
        return self.payments.get(order_id)

    async def set_payment(
        self,
        order_id: str,
        state: PaymentState,
        now: datetime,
        *,
        amount: Decimal | None = None,
        reason: str | None = None,
    ) -> None:
        payment = self.payments[order_id]
        self.payments[order_id] = replace(
            payment, state=state, amount=payment.amount if amount is None else amount
        )


@dataclass
class FakeUnitOfWork:
    """What a use case sees of a unit of work: named repositories and `emit`."""

    repositories: dict[Callable[..., Any], Any]
    emitted: list[EventPayload] = field(default_factory=list)

    def repository(self, kind: Callable[..., Any]) -> Any:
        return self.repositories[kind]

    async def emit(self, payload: EventPayload, *, subject: str, **_: Any) -> None:
        self.emitted.append(payload)


def fake() -> tuple[Any, FakeWallets]:
    wallets = FakeWallets()
    return FakeUnitOfWork({WalletRepository: wallets}), wallets


def placed(order_id: str, total: str) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id, user_id="u1", items=[], total=Decimal(total), occurred_at=NOW
    )


def failed(order_id: str) -> OrderFailed:
    return OrderFailed(order_id=order_id, user_id="u1", reason="out_of_stock", occurred_at=NOW)


async def funded(uow: Any, wallets: FakeWallets, amount: str) -> None:
    await payments.open_wallet(
        uow,
        UserCreated(
            user_id="u1",
            username="u1",
            email="u1@example.com",
            roles=["user"],
            password_hash="x",
            version=1,
            occurred_at=NOW,
        ),
    )
    await wallets.credit("u1", Decimal(amount), EntryKind.TOPUP, NOW, None)


async def test_a_debit_is_taken_once_and_refunded_once() -> None:
    uow, wallets = fake()
    await funded(uow, wallets, "10.00")
    await payments.debit(uow, placed("o1", "4.00"))
    await payments.debit(uow, placed("o1", "4.00"))  # redelivered: nothing more
    assert wallets.wallets["u1"].balance == Decimal("6.00")
    await payments.refund(uow, failed("o1"))
    await payments.refund(uow, failed("o1"))
    assert wallets.wallets["u1"].balance == Decimal("10.00")
    assert [type(event) for event in uow.emitted] == [PaymentDebited, PaymentRefunded]


async def test_insufficient_funds_rejects_and_a_failure_first_tombstones() -> None:
    uow, wallets = fake()
    await funded(uow, wallets, "1.00")
    await payments.debit(uow, placed("o1", "4.00"))
    assert isinstance(uow.emitted[-1], PaymentRejected)
    assert uow.emitted[-1].reason == "insufficient_funds"
    await payments.refund(uow, failed("o2"))  # failed before wallet saw it placed
    await payments.debit(uow, placed("o2", "0.50"))
    assert wallets.payments["o2"].state is PaymentState.CANCELLED
    assert wallets.wallets["u1"].balance == Decimal("1.00")
    assert len(uow.emitted) == 1
