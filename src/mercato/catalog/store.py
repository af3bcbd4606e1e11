"""Catalog's tables and the repositories over them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

from mercato.catalog.domain import Product, ReservationState, product_fields
from mercato.platform.db import Cents, UTCDateTime, insert_ignore, naming_metadata

metadata = naming_metadata()

products = Table(
    "products",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=True),
    Column("author", String(200), nullable=True),
    Column("category", String(100), nullable=True),
    Column("price", Cents, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("stock", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("owner_id", String(36), nullable=True),
    Column("external_id", String(100), nullable=True),
    Column("source", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The database itself refuses a negative stock, whatever a bug in the code above might do.
    CheckConstraint("stock >= 0", name="stock_not_negative"),
    CheckConstraint("price >= 0", name="price_not_negative"),
)
Index("ix_products_created_at_id", products.c.created_at, products.c.id)
Index("ix_products_source_external_id", products.c.source, products.c.external_id, unique=True)
Index("ix_products_category", products.c.category)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("state", String(16), nullable=False),
    # The quantities taken, {product_id: quantity}, so a release gives back exactly those.
    Column("items", Text, nullable=False),
    Column("reason", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# The provider state last applied to each synced product (by when integration fetched it), so
# a redelivered or overtaken `external_product.synced` never puts an older state back.
external_marks = Table(
    "external_marks",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("external_id", String(100), primary_key=True),
    Column("fetched_at", UTCDateTime, nullable=False),
)

_FIELDS = product_fields()
# The columns in `Product`'s field order: a row becomes a product positionally (the export
# turns a million of them).
_COLUMNS = tuple(products.c[name] for name in _FIELDS)


def _product(row: RowMapping) -> Product:
    return Product(**{name: row[name] for name in _FIELDS})


def _row(product: Product) -> dict[str, Any]:
    return {name: getattr(product, name) for name in _FIELDS}


@dataclass(frozen=True)
class ProductFilter:
    """What a product listing asks for."""

    q: str | None = None
    category: str | None = None
    available: bool | None = None
    source: str | None = None
    include_inactive: bool = False
    newest_first: bool = False


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(flt: ProductFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if not flt.include_inactive:
        where.append(products.c.active.is_(True))
    if flt.q:
        pattern = f"%{_escape_like(flt.q)}%"
        where.append(
            or_(
                products.c.name.ilike(pattern, escape="\\"),
                products.c.description.ilike(pattern, escape="\\"),
                products.c.author.ilike(pattern, escape="\\"),
            )
        )
    if flt.category is not None:
        where.append(func.lower(products.c.category) == flt.category.lower())
    if flt.source is not None:
        where.append(products.c.source == flt.source)
    if flt.available is True:
        where.append(and_(products.c.active.is_(True), products.c.stock > 0))
    elif flt.available is False:
        where.append(or_(products.c.active.is_(False), products.c.stock <= 0))
    return where


def keyset_page(
    query: Select[Any], cursor: tuple[datetime, str] | None, limit: int | None
) -> Select[Any]:
    """`query` limited to the `limit` products (all: None) after `cursor` in `created_at, id`
    order."""
    query = query.order_by(products.c.created_at, products.c.id).limit(limit)
    if cursor is None:
        return query
    created_at, product_id = cursor
    # A row-value comparison: SQLite and PostgreSQL both walk the (created_at, id) index from
    # the cursor; the equivalent OR form made SQLite rescan from the start.
    return query.where(
        tuple_(products.c.created_at, products.c.id)
        > tuple_(literal(created_at, UTCDateTime()), literal(product_id))
    )


class ProductRepository:
    """Products in one transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, product_id: str, *, for_update: bool = False) -> Product | None:
        """The product, or None; `for_update` locks its row (PostgreSQL) until commit."""
        query = select(products).where(products.c.id == product_id)
        if for_update:
            query = query.with_for_update()
        found = (await self.conn.execute(query)).mappings().first()
        return _product(found) if found else None

    async def by_external_id(
        self, source: str, external_id: str, *, for_update: bool = False
    ) -> Product | None:
        """The product a provider knows by `external_id`, or None."""
        query = select(products).where(
            products.c.source == source, products.c.external_id == external_id
        )
        if for_update:
            query = query.with_for_update()
        found = (await self.conn.execute(query)).mappings().first()
        return _product(found) if found else None

    async def add(self, product: Product) -> bool:
        """Insert a product; False when its `(source, external_id)` is taken (a racing sync)."""
        inserted = await insert_ignore(
            self.conn, products, _row(product), ["source", "external_id"]
        )
        return inserted == 1

    async def external_mark(self, source: str, external_id: str) -> datetime | None:
        """When the provider state last applied to this product was fetched, if ever."""
        query = select(external_marks.c.fetched_at).where(
            external_marks.c.source == source, external_marks.c.external_id == external_id
        )
        return (await self.conn.execute(query)).scalar_one_or_none()

    async def set_external_mark(self, source: str, external_id: str, fetched_at: datetime) -> None:
        """Record the provider state just applied."""
        done = await insert_ignore(
            self.conn,
            external_marks,
            {"source": source, "external_id": external_id, "fetched_at": fetched_at},
            ["source", "external_id"],
        )
        if not done:
            await self.conn.execute(
                update(external_marks)
                .where(
                    external_marks.c.source == source, external_marks.c.external_id == external_id
                )
                .values(fetched_at=fetched_at)
            )

    async def save(self, product: Product) -> None:
        """Write a changed product."""
        await self.conn.execute(
            update(products).where(products.c.id == product.id).values(**_row(product))
        )

    async def delete(self, product_id: str) -> None:
        """Remove a product."""
        await self.conn.execute(products.delete().where(products.c.id == product_id))

    async def page(self, flt: ProductFilter, skip: int, limit: int) -> tuple[list[Product], int]:
        """A page of products matching `flt` in creation order, and how many match."""
        where = _conditions(flt)
        total = (
            await self.conn.execute(select(func.count()).select_from(products).where(*where))
        ).scalar_one()
        order = (
            (products.c.created_at.desc(), products.c.id.desc())
            if flt.newest_first
            else (products.c.created_at, products.c.id)
        )
        rows = await self.conn.execute(
            select(products).where(*where).order_by(*order).offset(skip).limit(limit)
        )
        return [_product(r) for r in rows.mappings()], total

    async def count(self) -> int:
        """How many products there are, withdrawn ones too."""
        return int(
            (await self.conn.execute(select(func.count()).select_from(products))).scalar_one()
        )

    async def after(self, cursor: tuple[datetime, str] | None, limit: int) -> list[Product]:
        """Every product (inactive too) after `cursor` in `created_at, id` order: keyset pages
        that cost the same wherever they start, for the bulk export."""
        rows = await self.conn.execute(keyset_page(select(*_COLUMNS), cursor, limit))
        return [Product(*row) for row in rows]

    async def take_stock(self, product_id: str, quantity: int) -> bool:
        """Take `quantity` if that much is left, atomically; False otherwise (nothing taken).

        A conditional UPDATE: PostgreSQL re-checks `stock >= quantity` after waiting on a
        concurrent writer's row lock, so two orders can never both take the last copy.
        """
        result = await self.conn.execute(
            update(products)
            .where(
                products.c.id == product_id,
                products.c.active.is_(True),
                products.c.stock >= quantity,
            )
            .values(stock=products.c.stock - quantity)
        )
        return result.rowcount == 1

    async def give_back(self, product_id: str, quantity: int) -> None:
        """Return stock (a deleted product has nothing to return to)."""
        await self.conn.execute(
            update(products)
            .where(products.c.id == product_id)
            .values(stock=products.c.stock + quantity)
        )

    async def existing_ids(self, product_ids: list[str]) -> set[str]:
        """Which of these products exist."""
        rows = await self.conn.execute(select(products.c.id).where(products.c.id.in_(product_ids)))
        return {r for (r,) in rows}


@dataclass(frozen=True)
class Reservation:
    """Catalog's record of one order."""

    order_id: str
    state: ReservationState
    items: dict[str, int]


class ReservationRepository:
    """Reservations in one transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def claim(self, order_id: str, state: ReservationState, now: datetime) -> bool:
        """Record the first state of an order; False when it already has one.

        On PostgreSQL a concurrent claim of the same order waits for this transaction and then
        finds the row, so `order.placed` and `order.failed` handled at once by two workers
        serialize here.
        """
        row = {
            "order_id": order_id,
            "state": state.value,
            "items": "{}",
            "reason": None,
            "created_at": now,
            "updated_at": now,
        }
        return await insert_ignore(self.conn, reservations, row, ["order_id"]) == 1

    async def get(self, order_id: str, *, for_update: bool = False) -> Reservation | None:
        """The record of an order, or None."""
        query = select(reservations).where(reservations.c.order_id == order_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).mappings().first()
        if row is None:
            return None
        return Reservation(
            row["order_id"], ReservationState(row["state"]), json.loads(row["items"])
        )

    async def set(
        self,
        order_id: str,
        state: ReservationState,
        now: datetime,
        *,
        items: dict[str, int] | None = None,
        reason: str | None = None,
    ) -> None:
        """Move an order's record to `state`."""
        values: dict[str, Any] = {"state": state.value, "updated_at": now}
        if items is not None:
            values["items"] = json.dumps(items)
        if reason is not None:
            values["reason"] = reason
        await self.conn.execute(
            update(reservations).where(reservations.c.order_id == order_id).values(**values)
        )
