"""Wallet's tables and the repository over them.

The balance is kept on the wallet row for conditional debits (`balance >= amount` checked and
changed in one statement) and every change of it writes a ledger entry in the same statement
sequence of the same transaction, so the balance always equals the sum of the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    Column,
    Index,
    String,
    Table,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.platform.db import Cents, UTCDateTime, insert_ignore, naming_metadata
from mercato.platform.ids import new_id_str
from mercato.wallet.domain import EntryKind, PaymentState, WalletStatus

metadata = naming_metadata()

wallets = Table(
    "wallets",
    metadata,
    Column("user_id", String(36), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("balance", Cents, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The database itself refuses a negative balance, whatever a bug above might do.
    CheckConstraint("balance >= 0", name="balance_not_negative"),
)

ledger = Table(
    "ledger_entries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", Cents, nullable=False),
    Column("balance_after", Cents, nullable=False),
    Column("order_id", String(36), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)
Index("ix_ledger_entries_user_id_id", ledger.c.user_id, ledger.c.id)
# At most one debit and one refund per order, enforced by the database.
Index("ix_ledger_entries_order_id_kind", ledger.c.order_id, ledger.c.kind, unique=True)

payments = Table(
    "order_payments",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("state", String(16), nullable=False),
    Column("amount", Cents, nullable=False),
    Column("reason", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)


@dataclass(frozen=True)
class Wallet:
    """A user's wallet."""

    user_id: str
    status: WalletStatus
    balance: Decimal


@dataclass(frozen=True)
class Entry:
    """One movement of a balance."""

    id: str
    user_id: str
    kind: EntryKind
    amount: Decimal
    balance_after: Decimal
    order_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class Payment:
    """Wallet's record of one order."""

    order_id: str
    user_id: str
    state: PaymentState
    amount: Decimal


class WalletRepository:
    """Wallets, their ledgers and order payments, in one transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def open(self, user_id: str, now: datetime) -> bool:
        """Create an open, empty wallet; False if the user has one (open or closed) already."""
        row = {
            "user_id": user_id,
            "status": WalletStatus.OPEN.value,
            "balance": Decimal("0.00"),
            "created_at": now,
            "updated_at": now,
        }
        return await insert_ignore(self.conn, wallets, row, ["user_id"]) == 1

    async def close(self, user_id: str, now: datetime) -> None:
        """Close a wallet; a user deleted before their wallet was made gets a closed one, so
        a late `user.created` does not reopen it."""
        row = {
            "user_id": user_id,
            "status": WalletStatus.CLOSED.value,
            "balance": Decimal("0.00"),
            "created_at": now,
            "updated_at": now,
        }
        if not await insert_ignore(self.conn, wallets, row, ["user_id"]):
            await self.conn.execute(
                update(wallets)
                .where(wallets.c.user_id == user_id)
                .values(status=WalletStatus.CLOSED.value, updated_at=now)
            )

    async def get(self, user_id: str, *, for_update: bool = False) -> Wallet | None:
        """The wallet, or None; `for_update` locks it (PostgreSQL) until commit."""
        query = select(wallets).where(wallets.c.user_id == user_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).mappings().first()
        if row is None:
            return None
        return Wallet(row["user_id"], WalletStatus(row["status"]), row["balance"])

    async def credit(
        self, user_id: str, amount: Decimal, kind: EntryKind, now: datetime, order_id: str | None
    ) -> Decimal:
        """Add to a balance and write the ledger entry; answers the new balance."""
        await self.conn.execute(
            update(wallets)
            .where(wallets.c.user_id == user_id)
            .values(balance=wallets.c.balance + amount, updated_at=now)
        )
        return await self._entry(user_id, kind, amount, now, order_id)

    async def debit(
        self, user_id: str, amount: Decimal, now: datetime, order_id: str
    ) -> Decimal | None:
        """Take `amount` if the open wallet holds that much (checked and taken atomically);
        answers the new balance, or None when nothing was taken."""
        result = await self.conn.execute(
            update(wallets)
            .where(
                wallets.c.user_id == user_id,
                wallets.c.status == WalletStatus.OPEN.value,
                wallets.c.balance >= amount,
            )
            .values(balance=wallets.c.balance - amount, updated_at=now)
        )
        if result.rowcount != 1:
            return None
        return await self._entry(user_id, EntryKind.DEBIT, -amount, now, order_id)

    async def _entry(
        self, user_id: str, kind: EntryKind, amount: Decimal, now: datetime, order_id: str | None
    ) -> Decimal:
        # Our own update above holds the row lock, so this read is the balance it produced.
        balance = (
            await self.conn.execute(select(wallets.c.balance).where(wallets.c.user_id == user_id))
        ).scalar_one()
        await self.conn.execute(
            ledger.insert().values(
                id=new_id_str(),
                user_id=user_id,
                kind=kind.value,
                amount=amount,
                balance_after=balance,
                order_id=order_id,
                created_at=now,
            )
        )
        return Decimal(balance)

    async def entries(self, user_id: str, skip: int, limit: int) -> tuple[list[Entry], int]:
        """A user's ledger, newest first, and how many entries it has."""
        total = (
            await self.conn.execute(
                select(func.count()).select_from(ledger).where(ledger.c.user_id == user_id)
            )
        ).scalar_one()
        rows = await self.conn.execute(
            select(ledger)
            .where(ledger.c.user_id == user_id)
            .order_by(ledger.c.id.desc())
            .offset(skip)
            .limit(limit)
        )
        found = [
            Entry(
                id=r["id"],
                user_id=r["user_id"],
                kind=EntryKind(r["kind"]),
                amount=r["amount"],
                balance_after=r["balance_after"],
                order_id=r["order_id"],
                created_at=r["created_at"],
            )
            for r in rows.mappings()
        ]
        return found, total

    async def claim_payment(
        self, order_id: str, user_id: str, state: PaymentState, now: datetime
    ) -> bool:
        """Record the first state of an order's payment; False when it has one already.

        On PostgreSQL a concurrent claim of the same order waits for this transaction and then
        finds the row, so `order.placed` and `order.failed` handled at once serialize here.
        """
        row = {
            "order_id": order_id,
            "user_id": user_id,
            "state": state.value,
            "amount": Decimal("0.00"),
            "reason": None,
            "created_at": now,
            "updated_at": now,
        }
        return await insert_ignore(self.conn, payments, row, ["order_id"]) == 1

    async def payment(self, order_id: str, *, for_update: bool = False) -> Payment | None:
        """Wallet's record of an order, or None."""
        query = select(payments).where(payments.c.order_id == order_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).mappings().first()
        if row is None:
            return None
        return Payment(row["order_id"], row["user_id"], PaymentState(row["state"]), row["amount"])

    async def set_payment(
        self,
        order_id: str,
        state: PaymentState,
        now: datetime,
        *,
        amount: Decimal | None = None,
        reason: str | None = None,
    ) -> None:
        """Move an order's payment record to `state`."""
        values: dict[str, object] = {"state": state.value, "updated_at": now}
        if amount is not None:
            values["amount"] = amount
        if reason is not None:
            values["reason"] = reason
        await self.conn.execute(
            update(payments).where(payments.c.order_id == order_id).values(**values)
        )
