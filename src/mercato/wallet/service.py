"""Wallet's use cases for people: balance, top-up (with `Idempotency-Key`) and the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import structlog

from mercato.platform.clock import utcnow
from mercato.platform.db import Database
from mercato.platform.errors import Invalid, NotFound, RuleBroken
from mercato.platform.idempotency import IdempotencyKeys, fingerprint
from mercato.platform.money import format_money
from mercato.platform.uow import UnitOfWorkFactory
from mercato.wallet.domain import ZERO, EntryKind, WalletStatus, check_topup
from mercato.wallet.store import Entry, WalletRepository

log = structlog.get_logger("mercato.wallet")

TOPUP_SCOPE = "wallet.topup"


@dataclass(frozen=True)
class Balance:
    """A user's balance."""

    user_id: str
    balance: Decimal


@dataclass(frozen=True)
class TopUp:
    """A top-up request: who asks, for whose wallet, how much, under which key."""

    caller_id: str
    user_id: str
    amount: Decimal
    # None for admins: they are not capped.
    limit: Decimal | None
    idempotency_key: str | None = None


async def balance(database: Database, user_id: str, *, own: bool = True) -> Balance:
    """The user's balance: 0 for one's `own` before the wallet exists (registration reaches
    wallet a moment later), 404 for someone else's wallet that does not exist."""
    async with database.read() as conn:
        wallet = await WalletRepository(conn).get(user_id)
    if wallet is None and not own:
        raise NotFound("no such wallet")
    return Balance(user_id, wallet.balance if wallet else ZERO)


async def top_up(uow_factory: UnitOfWorkFactory, request: TopUp) -> Balance:
    """Credit a wallet; a repeat with the same `Idempotency-Key` answers the first result.

    A person topping up their own wallet before `user.created` reached wallet gets it opened
    here (registration and wallet creation are eventually consistent); an admin can top up
    only an existing wallet.
    """
    key = request.idempotency_key
    async with uow_factory() as uow:
        keys = IdempotencyKeys(uow.connection, TOPUP_SCOPE)
        if key is not None:
            digest = fingerprint(
                {"user_id": request.user_id, "amount": format_money(request.amount)}
            )
            stored = await keys.claim(request.caller_id, key, digest)
            if stored is not None:
                return Balance(stored.body["user_id"], Decimal(stored.body["balance"]))
        repo = uow.repository(WalletRepository)
        now = utcnow()
        if request.user_id == request.caller_id:
            await repo.open(request.user_id, now)
        wallet = await repo.get(request.user_id, for_update=True)
        if wallet is None or wallet.status is WalletStatus.CLOSED:
            raise NotFound("no such wallet")
        try:
            check_topup(request.amount, wallet.balance, limit=request.limit)
        except RuleBroken as exc:
            raise Invalid.of(exc) from None
        new_balance = await repo.credit(request.user_id, request.amount, EntryKind.TOPUP, now, None)
        answer = Balance(request.user_id, new_balance)
        if key is not None:
            await keys.store(
                request.caller_id,
                key,
                200,
                {"user_id": answer.user_id, "balance": format_money(answer.balance)},
            )
    log.info("wallet topped up", user_id=request.user_id, by=request.caller_id)
    return answer


async def ledger(
    database: Database, user_id: str, skip: int, limit: int, *, own: bool = True
) -> tuple[list[Entry], int]:
    """A page of the user's ledger, newest first; 404 for someone else's wallet that does not
    exist (one's `own` is just empty before it does)."""
    async with database.read() as conn:
        repo = WalletRepository(conn)
        if not own and await repo.get(user_id) is None:
            raise NotFound("no such wallet")
        return await repo.entries(user_id, skip, limit)
