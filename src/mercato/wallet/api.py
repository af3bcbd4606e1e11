"""Wallet's HTTP API (DESIGN §2): parse, call a use case, shape the answer."""

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from mercato.platform.auth import Principal
from mercato.platform.errors import Forbidden, Invalid
from mercato.platform.http_inputs import ExactJsonRoute, IdempotencyKeyDep
from mercato.platform.money import Money
from mercato.platform.openapi import json_examples
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


def _whose_wallet(caller: Principal, user_id: UUID | None, what: str) -> str:
    """The user whose wallet `caller` may read: their own, or (admins) anyone's by `user_id`."""
    if caller.is_admin:
        if user_id is not None:
            return str(user_id)
        if caller.is_machine:
            raise Invalid(
                "user_id is required with a machine token",
                errors=[{"loc": ["query", "user_id"], "msg": "required", "type": "missing"}],
            )
        return caller.sub
    if caller.is_machine:
        raise Forbidden("this endpoint needs a person's token or an admin's")
    if user_id is not None and str(user_id) != caller.sub:
        raise Forbidden(f"only admins may read another user's {what}")
    return caller.sub


def build_router(ctx: ServiceContext) -> APIRouter:
    """The wallet routes, bound to this service's context."""
    # Exact JSON numbers: a top-up of 19.9999999999999999 is refused, not rounded to 20.00.
    router = APIRouter(tags=["wallet"], route_class=ExactJsonRoute)
    Caller = Annotated[Principal, Depends(ctx.auth.current)]
    UserIdQuery = Annotated[
        UUID | None, Query(description="admins (or `mercato.admin` machines): whose")
    ]

    @router.get("/api/v1/wallet/balance")
    async def balance(caller: Caller, user_id: UserIdQuery = None) -> BalanceOut:
        """The caller's balance, or (admins) any user's by `user_id`; 403 for another's."""
        target = _whose_wallet(caller, user_id, "balance")
        found = await service.balance(ctx.database, target, own=target == caller.sub)
        return BalanceOut(user_id=found.user_id, balance=found.balance)

    @router.post(
        "/api/v1/wallet/topup",
        openapi_extra=json_examples(
            own_wallet={"amount": "100.00"},
            by_an_admin={"amount": 250, "user_id": "0193a0a0-0000-7000-8000-000000000001"},
        ),
    )
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
    async def ledger(caller: Caller, page: PageDep, user_id: UserIdQuery = None) -> Page[EntryOut]:
        """The caller's ledger entries, or (admins) any user's by `user_id`; newest first."""
        target = _whose_wallet(caller, user_id, "ledger")
        entries, total = await service.ledger(
            ctx.database, target, page.skip, page.limit, own=target == caller.sub
        )
        return Page(
            items=[EntryOut.of(e) for e in entries], total=total, skip=page.skip, limit=page.limit
        )

    return router
