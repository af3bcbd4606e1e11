"""Orders' HTTP API (DESIGN §2): parse, call a use case, shape the answer."""

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, ConfigDict, Field

from mercato.orders import service
from mercato.orders.domain import MAX_LINES, MAX_QUANTITY, Order, OrderStatus, TimelineEntry
from mercato.orders.store import OrderFilter
from mercato.platform.auth import Principal
from mercato.platform.errors import Forbidden
from mercato.platform.http_inputs import IdempotencyKeyDep
from mercato.platform.money import Money
from mercato.platform.openapi import json_examples
from mercato.platform.pagination import Page, PageDep
from mercato.platform.service import ServiceContext


class LineIn(BaseModel):
    """A product and how many of it."""

    model_config = ConfigDict(extra="forbid")

    product_id: UUID
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY, strict=True)]


class OrderIn(BaseModel):
    """What to buy."""

    model_config = ConfigDict(extra="forbid")

    items: list[LineIn] = Field(min_length=1, max_length=MAX_LINES)


class LineOut(BaseModel):
    """One line, priced at placement."""

    product_id: str
    name: str
    quantity: int
    unit_price: Money
    line_total: Money


class OrderOut(BaseModel):
    """An order and where its saga stands."""

    id: str
    user_id: str
    status: Literal["pending", "completed", "failed"]
    items: list[LineOut]
    total: Money
    is_payment_processed: bool
    is_inventory_processed: bool
    fail_reason: str | None
    payment_status: Literal["pending", "debited", "rejected", "refunded"]
    inventory_status: Literal["pending", "reserved", "rejected", "released"]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, order: Order) -> "OrderOut":
        """The public view of an order."""
        return cls(
            id=order.id,
            user_id=order.user_id,
            status=order.status.value,
            items=[
                LineOut(
                    product_id=line.product_id,
                    name=line.name,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                    line_total=line.line_total,
                )
                for line in order.lines
            ],
            total=order.total,
            is_payment_processed=order.is_payment_processed,
            is_inventory_processed=order.is_inventory_processed,
            fail_reason=order.fail_reason,
            payment_status=order.payment.value,
            inventory_status=order.stock.value,
            created_at=order.created_at,
            updated_at=order.updated_at,
        )


class TimelineEventOut(BaseModel):
    """One event that moved an order."""

    type: str
    occurred_at: datetime
    event_id: str
    correlation_id: str
    causation_id: str | None
    source: str

    @classmethod
    def of(cls, entry: TimelineEntry) -> "TimelineEventOut":
        """The public view of a timeline entry."""
        return cls(
            type=entry.event_type,
            occurred_at=entry.occurred_at,
            event_id=entry.event_id,
            correlation_id=entry.correlation_id,
            causation_id=entry.causation_id,
            source=entry.source,
        )


class TimelineOut(BaseModel):
    """An order's saga as it happened: every event that moved it, oldest first."""

    order_id: str
    status: Literal["pending", "completed", "failed"]
    events: list[TimelineEventOut]


def _page(orders: list[Order], total: int, skip: int, limit: int) -> Page[OrderOut]:
    return Page(items=[OrderOut.of(o) for o in orders], total=total, skip=skip, limit=limit)


def build_router(ctx: ServiceContext) -> APIRouter:
    """The orders routes, bound to this service's context."""
    router = APIRouter(tags=["orders"])
    Person = Annotated[Principal, Depends(ctx.auth.require_person)]
    Admin = Annotated[Principal, Depends(ctx.auth.require_admin)]
    Caller = Annotated[Principal, Depends(ctx.auth.require_user)]

    @router.post(
        "/api/v1/orders",
        status_code=status.HTTP_202_ACCEPTED,
        openapi_extra=json_examples(
            two_lines={
                "items": [
                    {"product_id": "0193a0a0-0000-7000-8000-00000000000a", "quantity": 1},
                    {"product_id": "0193a0a0-0000-7000-8000-00000000000b", "quantity": 2},
                ]
            }
        ),
    )
    async def place(caller: Person, body: OrderIn, key: IdempotencyKeyDep) -> OrderOut:
        """Place an order: 202 while wallet and catalog answer; poll it until it is final."""
        order = await service.place_order(
            ctx.uow,
            service.Placement(
                user_id=caller.sub,
                items=[(str(line.product_id), line.quantity) for line in body.items],
                idempotency_key=key,
            ),
        )
        return OrderOut.of(order)

    @router.get("/api/v1/orders")
    async def my_orders(
        caller: Person, page: PageDep, status: OrderStatus | None = None
    ) -> Page[OrderOut]:
        """The caller's orders, newest first."""
        found, total = await service.list_orders(
            ctx.database, OrderFilter(user_id=caller.sub, status=status), page.skip, page.limit
        )
        return _page(found, total, page.skip, page.limit)

    @router.get("/api/v1/orders/{order_id}")
    async def my_order(caller: Person, order_id: UUID) -> OrderOut:
        """One of the caller's orders (404 for anyone else's; admins see all)."""
        viewer = None if caller.is_admin else caller.sub
        return OrderOut.of(await service.get_order(ctx.database, str(order_id), viewer))

    @router.get("/api/v1/orders/{order_id}/timeline")
    async def timeline(caller: Caller, order_id: UUID) -> TimelineOut:
        """The events that moved one of the caller's orders, oldest first (404 for anyone
        else's; admins, machines with `mercato.admin` included, see all)."""
        if caller.is_machine and not caller.is_admin:
            raise Forbidden("admin rights or the order's owner required")
        viewer = None if caller.is_admin else caller.sub
        order, entries = await service.get_timeline(ctx.database, str(order_id), viewer)
        return TimelineOut(
            order_id=order.id,
            status=order.status.value,
            events=[TimelineEventOut.of(entry) for entry in entries],
        )

    @router.get("/api/v1/admin/orders")
    async def all_orders(
        _: Admin,
        page: PageDep,
        status: OrderStatus | None = None,
        user_id: Annotated[UUID | None, Query()] = None,
    ) -> Page[OrderOut]:
        """Every order, newest first."""
        flt = OrderFilter(user_id=str(user_id) if user_id else None, status=status)
        found, total = await service.list_orders(ctx.database, flt, page.skip, page.limit)
        return _page(found, total, page.skip, page.limit)

    return router
