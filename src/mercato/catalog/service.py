"""Catalog's product use cases: each change commits with its `product.*` event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog

from mercato.catalog.contracts import ProductDeleted, ProductUpserted
from mercato.catalog.domain import (
    DEFAULT_CURRENCY,
    LOCAL_SOURCE,
    Product,
    apply_changes,
    full_state,
)
from mercato.catalog.export_rows import csv_page
from mercato.catalog.store import ProductFilter, ProductRepository
from mercato.platform.clock import utcnow
from mercato.platform.db import Database
from mercato.platform.errors import NotFound
from mercato.platform.ids import new_id_str
from mercato.platform.uow import UnitOfWork, UnitOfWorkFactory

log = structlog.get_logger("mercato.catalog")

# Products per keyset page of the bulk export (and per chunk of its HTTP stream).
EXPORT_BATCH = 2000
# Rows per page of the CSV export, one finished line each (~0.75 MB a page): 10,000 saved
# ~5 % of the time and cost ~5 MB more peak RSS, 2,000 the reverse (bench/export.py).
EXPORT_CSV_BATCH = 5_000


async def emit_upserted(uow: UnitOfWork, product: Product) -> None:
    """Announce a product's whole new state (orders keeps a replica of it)."""
    await uow.emit(
        ProductUpserted(
            product_id=product.id,
            name=product.name,
            price=product.price,
            currency=product.currency,
            active=product.active,
            stock=product.stock,
            source=product.source,
            external_id=product.external_id,
            version=product.version,
            occurred_at=product.updated_at,
        ),
        subject=product.id,
    )


def new_product(
    values: Mapping[str, Any], *, source: str = LOCAL_SOURCE, external_id: str | None = None
) -> Product:
    """A product at version 1 from its editable fields."""
    now = utcnow()
    state = full_state(values)
    return Product(
        id=new_id_str(),
        currency=DEFAULT_CURRENCY,
        external_id=external_id,
        source=source,
        version=1,
        created_at=now,
        updated_at=now,
        **state,
    )


async def create_product(uow_factory: UnitOfWorkFactory, values: Mapping[str, Any]) -> Product:
    """Add a product (admin) and emit `product.upserted`."""
    product = new_product(values)
    async with uow_factory() as uow:
        await uow.repository(ProductRepository).add(product)
        await emit_upserted(uow, product)
    log.info("product created", product_id=product.id)
    return product


async def get_product(uow_factory: UnitOfWorkFactory, product_id: str) -> Product:
    """The product, or 404."""
    async with uow_factory() as uow:
        product = await uow.repository(ProductRepository).get(product_id)
    if product is None:
        raise NotFound("no such product")
    return product


async def update_product(
    uow_factory: UnitOfWorkFactory,
    product_id: str,
    changes: Mapping[str, Any],
    *,
    replace_all: bool = False,
) -> Product:
    """PUT (`replace_all`: omitted fields back to defaults) or PATCH a product (admin)."""
    values = full_state(changes) if replace_all else dict(changes)
    async with uow_factory() as uow:
        repo = uow.repository(ProductRepository)
        # Locked so two concurrent admin edits each get their own version number.
        product = await repo.get(product_id, for_update=True)
        if product is None:
            raise NotFound("no such product")
        updated = apply_changes(product, values, utcnow())
        if updated is product:
            return product
        await repo.save(updated)
        await emit_upserted(uow, updated)
    log.info("product updated", product_id=product_id, version=updated.version)
    return updated


async def delete_product(uow_factory: UnitOfWorkFactory, product_id: str) -> None:
    """Remove a product (admin) and emit `product.deleted`; orders keep their own lines."""
    async with uow_factory() as uow:
        repo = uow.repository(ProductRepository)
        product = await repo.get(product_id, for_update=True)
        if product is None:
            raise NotFound("no such product")
        await repo.delete(product_id)
        await uow.emit(
            ProductDeleted(
                product_id=product_id, version=product.version + 1, occurred_at=utcnow()
            ),
            subject=product_id,
        )
    log.info("product deleted", product_id=product_id)


async def list_products(
    database: Database, flt: ProductFilter, skip: int, limit: int
) -> tuple[list[Product], int]:
    """A page of products (a read transaction: listings never wait for writers)."""
    async with database.read() as conn:
        return await ProductRepository(conn).page(flt, skip, limit)


async def count_products(database: Database) -> int:
    """How many products an export would stream now (one count, before the stream starts)."""
    async with database.read() as conn:
        return await ProductRepository(conn).count()


async def export_pages(database: Database) -> AsyncIterator[list[Product]]:
    """Every product in `created_at, id` order, in keyset pages of `EXPORT_BATCH`.

    Each page is its own short read, so memory stays constant and no transaction stays open
    while a slow reader consumes the stream.
    """
    cursor = None
    while True:
        async with database.read() as conn:
            batch = await ProductRepository(conn).after(cursor, EXPORT_BATCH)
        if batch:
            yield batch
        if len(batch) < EXPORT_BATCH:
            return
        last = batch[-1]
        cursor = (last.created_at, last.id)


async def export_csv_pages(database: Database, *, neutralise: bool) -> AsyncIterator[str]:
    """Every product's CSV line, in `created_at, id` order, a page of lines at a time.

    Pages as `export_pages`' (each its own short read), formatted by the database: a million
    rows cost no Python object each.
    """
    cursor = None
    while True:
        async with database.read() as conn:
            text, cursor = await csv_page(conn, cursor, EXPORT_CSV_BATCH, neutralise=neutralise)
        if text:
            yield text
        if cursor is None:
            return
