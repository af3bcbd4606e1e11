"""Wallet's HTTP API (DESIGN §2): parse, call a use case, shape the answer."""

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from mercato.platform.auth import Principal
from mercato.platform.errors import Forbidden
from mercato.platform.idempotency import IdempotencyKeyDep
from mercato.platform.money import Money
from mercato.platform.pagination import Page, PageDep
from mercato.platform.service import ServiceContext
from mercato.wallet import service
from mercato.wallet.store import Entry


class TopUpIn(BaseModel):
    """Add purchase tokens: to your own wallet, or (admins) to anyone's."""

    model_config = ConfigDict(extra="forbid")

    amount: Money
    user_id: UUID | None = None


class BalanceOut(BaseModel):
    """A wallet's balance."""

    user_id: str
    balance: Money


class EntryOut(BaseModel):
    """One ledger entry; debits are negative."""

    id: str
    kind: Literal["topup", "debit", "refund"]
    amount: Money
    balance_after: Money
    order_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, entry: Entry) -> "EntryOut":
        """The public view of an entry."""
        return cls(
            id=entry.id,
            kind=entry.kind.value,
            amount=entry.amount,
            balance_after=entry.balance_after,
            order_id=entry.order_id,
            created_at=entry.created_at,
        )


def build_router(ctx: ServiceContext) -> APIRouter:
    """The wallet routes, bound to this service's context."""
    router = APIRouter(tags=["wallet"])
    Person = Annotated[Principal, Depends(ctx.auth.require_person)]
    Caller = Annotated[Principal, Depends(ctx.auth.current)]

    @router.get("/api/v1/wallet/balance")
    async def balance(caller: Person) -> BalanceOut:
        """The caller's balance."""
        found = await service.balance(ctx.database, caller.sub)
        return BalanceOut(user_id=found.user_id, balance=found.balance)

    @router.post("/api/v1/wallet/topup")
    async def top_up(caller: Caller, body: TopUpIn, key: IdempotencyKeyDep) -> BalanceOut:
        """Add to a balance; send an `Idempotency-Key` to make retries safe."""
        if not (caller.is_admin or caller.is_person):
            raise Forbidden("this endpoint needs a person's or an admin's token")
        target = str(body.user_id) if body.user_id else caller.sub
        if target != caller.sub and not caller.is_admin:
            raise Forbidden("only admins may top up another user's wallet")
        found = await service.top_up(
            ctx.uow,
            service.TopUp(
                caller_id=caller.sub,
                user_id=target,
                amount=body.amount,
                limit=None if caller.is_admin else ctx.settings.wallet_topup_limit,
                idempotency_key=key,
            ),
        )
        return BalanceOut(user_id=found.user_id, balance=found.balance)

    @router.get("/api/v1/wallet/ledger")
    async def ledger(
        caller: Person,
        page: PageDep,
        user_id: Annotated[UUID | None, Query(description="admins: another user's")] = None,
    ) -> Page[EntryOut]:
        """The caller's ledger entries, newest first."""
        target = str(user_id) if user_id else caller.sub
        if target != caller.sub and not caller.is_admin:
            raise Forbidden("only admins may read another user's ledger")
        entries, total = await service.ledger(ctx.database, target, page.skip, page.limit)
        return Page(
            items=[EntryOut.of(e) for e in entries], total=total, skip=page.skip, limit=page.limit
        )

    return router
