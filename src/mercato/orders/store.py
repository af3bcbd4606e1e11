"""Orders' tables and the repositories over them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Index,
    Integer,
    String,
    Table,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.orders.domain import (
    Line,
    Order,
    OrderStatus,
    PaymentStep,
    ReplicaProduct,
    StockStep,
    TimelineEntry,
)
from mercato.platform.db import Cents, UTCDateTime, insert_ignore, naming_metadata

metadata = naming_metadata()

orders = Table(
    "orders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total", Cents, nullable=False),
    Column("payment", String(16), nullable=False),
    Column("stock", String(16), nullable=False),
    Column("fail_reason", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("ix_orders_user_id_created_at", orders.c.user_id, orders.c.created_at)
Index("ix_orders_created_at", orders.c.created_at)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("product_id", String(36), nullable=False),
    Column("name", String(200), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Cents, nullable=False),
)

product_replica = Table(
    "product_replica",
    metadata,
    Column("product_id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("price", Cents, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    # A tombstone, so a `product.upserted` older than the deletion cannot bring it back.
    Column("deleted", Boolean, nullable=False),
)


# The events that moved each order, written in the transaction that applied (or emitted) them,
# so the timeline never shows an event whose effect rolled back.
order_timeline = Table(
    "order_timeline",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("event_type", String(100), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("causation_id", String(36), nullable=True),
    Column("source", String(64), nullable=False),
)


@dataclass(frozen=True)
class OrderFilter:
    """Which orders a listing shows."""

    user_id: str | None = None
    status: OrderStatus | None = None


def _order(row: RowMapping, lines: Sequence[Line]) -> Order:
    return Order(
        id=row["id"],
        user_id=row["user_id"],
        status=OrderStatus(row["status"]),
        lines=tuple(lines),
        total=row["total"],
        payment=PaymentStep(row["payment"]),
        stock=StockStep(row["stock"]),
        fail_reason=row["fail_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _state(order: Order) -> dict[str, Any]:
    return {
        "status": order.status.value,
        "payment": order.payment.value,
        "stock": order.stock.value,
        "fail_reason": order.fail_reason,
        "updated_at": order.updated_at,
    }


# The saga reads an order and its lines for every answer: these statements are built once (a
# statement object memoizes its cache key, so SQLAlchemy finds the compiled SQL without walking
# a new construct) and the ids are one expanding parameter instead of an IN-list per call.
_GET = select(orders).where(orders.c.id == bindparam("order_id"))
_GET_LOCKED = _GET.with_for_update()
_LINES = (
    select(order_lines)
    .where(order_lines.c.order_id.in_(bindparam("order_ids", expanding=True)))
    .order_by(order_lines.c.order_id, order_lines.c.line_no)
)


class OrderRepository:
    """Orders and their lines in one transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, order: Order) -> None:
        """Insert a new order with its lines."""
        await self.conn.execute(
            orders.insert().values(
                id=order.id,
                user_id=order.user_id,
                total=order.total,
                created_at=order.created_at,
                **_state(order),
            )
        )
        await self.conn.execute(
            order_lines.insert(),
            [
                {
                    "order_id": order.id,
                    "line_no": no,
                    "product_id": line.product_id,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                }
                for no, line in enumerate(order.lines)
            ],
        )

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        """The order, or None; `for_update` locks it (PostgreSQL) so two answers handled at
        once by two workers cannot both miss each other."""
        query = _GET_LOCKED if for_update else _GET
        row = (await self.conn.execute(query, {"order_id": order_id})).mappings().first()
        if row is None:
            return None
        return _order(row, (await self._lines([order_id]))[order_id])

    async def save_state(self, order: Order) -> None:
        """Write an order's saga state (its lines never change)."""
        await self.conn.execute(
            update(orders).where(orders.c.id == order.id).values(**_state(order))
        )

    async def pending_of(self, user_id: str) -> list[Order]:
        """A user's pending orders, locked."""
        rows = await self.conn.execute(
            select(orders)
            .where(orders.c.user_id == user_id, orders.c.status == OrderStatus.PENDING.value)
            .order_by(orders.c.id)
            .with_for_update()
        )
        found = list(rows.mappings())
        lines = await self._lines([r["id"] for r in found])
        return [_order(r, lines[r["id"]]) for r in found]

    async def page(self, flt: OrderFilter, skip: int, limit: int) -> tuple[list[Order], int]:
        """A page of orders, newest first, and how many match."""
        where = []
        if flt.user_id is not None:
            where.append(orders.c.user_id == flt.user_id)
        if flt.status is not None:
            where.append(orders.c.status == flt.status.value)
        total = (
            await self.conn.execute(select(func.count()).select_from(orders).where(*where))
        ).scalar_one()
        rows = list(
            (
                await self.conn.execute(
                    select(orders)
                    .where(*where)
                    .order_by(orders.c.created_at.desc(), orders.c.id.desc())
                    .offset(skip)
                    .limit(limit)
                )
            ).mappings()
        )
        lines = await self._lines([r["id"] for r in rows])
        return [_order(r, lines[r["id"]]) for r in rows], total

    async def _lines(self, order_ids: list[str]) -> dict[str, list[Line]]:
        found: dict[str, list[Line]] = {order_id: [] for order_id in order_ids}
        if not order_ids:
            return found
        rows = await self.conn.execute(_LINES, {"order_ids": order_ids})
        for r in rows.mappings():
            found[r["order_id"]].append(
                Line(r["product_id"], r["name"], r["quantity"], r["unit_price"])
            )
        return found


class ReplicaRepository:
    """Orders' copy of catalog's products."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get_many(self, product_ids: Sequence[str]) -> dict[str, ReplicaProduct]:
        """The replica rows of these products (missing ones are unknown)."""
        rows = await self.conn.execute(
            select(product_replica).where(product_replica.c.product_id.in_(set(product_ids)))
        )
        return {r["product_id"]: ReplicaProduct(**dict(r)) for r in rows.mappings()}

    async def get(self, product_id: str, *, for_update: bool = False) -> ReplicaProduct | None:
        """One replica row, or None."""
        query = select(product_replica).where(product_replica.c.product_id == product_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).mappings().first()
        return ReplicaProduct(**dict(row)) if row else None

    async def put(self, product: ReplicaProduct) -> None:
        """Insert or overwrite a replica row (the caller checked it is newer)."""
        values = {
            "name": product.name,
            "price": product.price,
            "active": product.active,
            "version": product.version,
            "deleted": product.deleted,
        }
        inserted = await insert_ignore(
            self.conn,
            product_replica,
            {"product_id": product.product_id, **values},
            ["product_id"],
        )
        if not inserted:
            await self.conn.execute(
                update(product_replica)
                .where(
                    product_replica.c.product_id == product.product_id,
                    product_replica.c.version < product.version,
                )
                .values(**values)
            )


class TimelineRepository:
    """The events each order went through."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, entry: TimelineEntry) -> None:
        """Record an event of an order (once, however often it is delivered)."""
        await insert_ignore(
            self.conn,
            order_timeline,
            {
                "order_id": entry.order_id,
                "event_id": entry.event_id,
                "event_type": entry.event_type,
                "occurred_at": entry.occurred_at,
                "correlation_id": entry.correlation_id,
                "causation_id": entry.causation_id,
                "source": entry.source,
            },
            ["order_id", "event_id"],
        )

    async def of(self, order_id: str) -> list[TimelineEntry]:
        """An order's events, oldest first."""
        rows = await self.conn.execute(
            select(order_timeline)
            .where(order_timeline.c.order_id == order_id)
            .order_by(order_timeline.c.occurred_at, order_timeline.c.event_id)
        )
        return [TimelineEntry(**dict(r)) for r in rows.mappings()]
