"""External-sync runs (DESIGN §5): catalog upserts provider products and records each run.

Integration fetches the provider's pages and hands them over through the HTTP endpoints of
`catalog.contracts`; these are the use cases behind them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.catalog.contracts import (
    ExternalBatchResult,
    ExternalItemError,
    ExternalProduct,
    SyncRunFinish,
    SyncRunOut,
    SyncRunStart,
)
from mercato.catalog.domain import LOCAL_SOURCE, SyncOutcome, apply_changes, sync_outcome
from mercato.catalog.service import emit_upserted, new_product
from mercato.catalog.store import ProductRepository, sync_runs
from mercato.platform.clock import utcnow
from mercato.platform.db import Database
from mercato.platform.errors import Conflict, Invalid, NotFound
from mercato.platform.ids import new_id_str
from mercato.platform.uow import UnitOfWork, UnitOfWorkFactory

log = structlog.get_logger("mercato.catalog")


def _run(row: RowMapping) -> SyncRunOut:
    return SyncRunOut.model_validate(dict(row))


async def _get_run(conn: AsyncConnection, run_id: str, *, for_update: bool = False) -> SyncRunOut:
    query = select(sync_runs).where(sync_runs.c.id == run_id)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).mappings().first()
    if row is None:
        raise NotFound("no such sync run")
    return _run(row)


async def trigger_sync(uow_factory: UnitOfWorkFactory, requested_by: str) -> str:
    """Queue a sync for integration to pick up; an already queued one is answered instead."""
    async with uow_factory() as uow:
        queued = (
            await uow.connection.execute(
                select(sync_runs.c.id).where(sync_runs.c.status == "queued").limit(1)
            )
        ).scalar_one_or_none()
        if queued is not None:
            return str(queued)
        run_id = new_id_str()
        await uow.connection.execute(
            sync_runs.insert().values(
                id=run_id,
                source=None,
                trigger="manual",
                status="queued",
                requested_by=requested_by,
                requested_at=utcnow(),
                created=0,
                updated=0,
                unchanged=0,
                failed=0,
            )
        )
    log.info("external sync queued", run_id=run_id)
    return run_id


async def start_run(uow_factory: UnitOfWorkFactory, start: SyncRunStart, by: str) -> SyncRunOut:
    """Begin a run right away (integration's scheduled tick)."""
    if start.source == LOCAL_SOURCE:
        raise Invalid("`local` is catalog's own products, not a provider")
    now = utcnow()
    run_id = new_id_str()
    async with uow_factory() as uow:
        await uow.connection.execute(
            sync_runs.insert().values(
                id=run_id,
                source=start.source,
                trigger=start.trigger,
                status="running",
                requested_by=by,
                requested_at=now,
                started_at=now,
                created=0,
                updated=0,
                unchanged=0,
                failed=0,
                next_run_at=start.next_run_at,
            )
        )
        return await _get_run(uow.connection, run_id)


async def claim_run(
    uow_factory: UnitOfWorkFactory, source: str, next_run_at: datetime | None
) -> SyncRunOut | None:
    """Take the oldest queued run for `source` (several integration replicas: one wins)."""
    if source == LOCAL_SOURCE:
        raise Invalid("`local` is catalog's own products, not a provider")
    async with uow_factory() as uow:
        run_id = (
            await uow.connection.execute(
                select(sync_runs.c.id)
                .where(sync_runs.c.status == "queued")
                .order_by(sync_runs.c.requested_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
        ).scalar_one_or_none()
        if run_id is None:
            return None
        await uow.connection.execute(
            update(sync_runs)
            .where(sync_runs.c.id == run_id)
            .values(status="running", source=source, started_at=utcnow(), next_run_at=next_run_at)
        )
        return await _get_run(uow.connection, run_id)


async def upsert_external_products(
    uow_factory: UnitOfWorkFactory, run_id: str, items: list[dict[str, Any]]
) -> ExternalBatchResult:
    """Upsert one page of provider products by `(source, external_id)` within a running run.

    Each product is validated on its own: a bad one is counted `failed` with its error and the
    rest still go in. Counts add up on the run; every real change emits `product.upserted`.
    """
    counts = {SyncOutcome.CREATED: 0, SyncOutcome.UPDATED: 0, SyncOutcome.UNCHANGED: 0}
    errors: list[ExternalItemError] = []
    async with uow_factory() as uow:
        run = await _get_run(uow.connection, run_id, for_update=True)
        if run.status != "running" or run.source is None:
            raise Conflict(f"sync run is {run.status}, not running")
        for index, raw in enumerate(items):
            try:
                item = ExternalProduct.model_validate(raw)
            except ValidationError as exc:
                external_id = raw.get("external_id") if isinstance(raw, dict) else None
                errors.append(
                    ExternalItemError(
                        index=index,
                        external_id=str(external_id) if external_id is not None else None,
                        error="; ".join(
                            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                            for e in exc.errors()
                        )[:500],
                    )
                )
                continue
            counts[await _upsert_one(uow, run.source, item)] += 1
        await uow.connection.execute(
            update(sync_runs)
            .where(sync_runs.c.id == run_id)
            .values(
                created=sync_runs.c.created + counts[SyncOutcome.CREATED],
                updated=sync_runs.c.updated + counts[SyncOutcome.UPDATED],
                unchanged=sync_runs.c.unchanged + counts[SyncOutcome.UNCHANGED],
                failed=sync_runs.c.failed + len(errors),
            )
        )
    return ExternalBatchResult(
        run_id=run_id,
        created=counts[SyncOutcome.CREATED],
        updated=counts[SyncOutcome.UPDATED],
        unchanged=counts[SyncOutcome.UNCHANGED],
        failed=len(errors),
        errors=errors,
    )


async def _upsert_one(uow: UnitOfWork, source: str, item: ExternalProduct) -> SyncOutcome:
    repo = ProductRepository(uow.connection)
    values = item.model_dump(exclude={"external_id"})
    existing = await repo.by_external_id(source, item.external_id, for_update=True)
    if existing is None:
        product = new_product(values, source=source, external_id=item.external_id)
        if await repo.add(product):
            await emit_upserted(uow, product)
            return SyncOutcome.CREATED
        # A concurrent run inserted it a moment ago: update that one instead.
        existing = await repo.by_external_id(source, item.external_id, for_update=True)
        assert existing is not None
    # `owner_id` is ours to set, never the provider's.
    updated = apply_changes(existing, values, utcnow())
    outcome = sync_outcome(existing, updated)
    if outcome is SyncOutcome.UPDATED:
        await repo.save(updated)
        await emit_upserted(uow, updated)
    return outcome


async def finish_run(uow_factory: UnitOfWorkFactory, run_id: str, end: SyncRunFinish) -> SyncRunOut:
    """Close a running run as succeeded or failed."""
    async with uow_factory() as uow:
        run = await _get_run(uow.connection, run_id, for_update=True)
        if run.status != "running":
            raise Conflict(f"sync run is {run.status}, not running")
        values: dict[str, Any] = {
            "status": end.status,
            "finished_at": utcnow(),
            "error": end.error,
        }
        if end.next_run_at is not None:
            values["next_run_at"] = end.next_run_at
        await uow.connection.execute(
            update(sync_runs).where(sync_runs.c.id == run_id).values(**values)
        )
        finished = await _get_run(uow.connection, run_id)
    log.info(
        "external sync finished",
        run_id=run_id,
        status=finished.status,
        created=finished.created,
        updated=finished.updated,
        unchanged=finished.unchanged,
        failed=finished.failed,
    )
    return finished


async def sync_status(
    database: Database, limit: int = 20
) -> tuple[list[SyncRunOut], datetime | None]:
    """The newest runs, and when integration said the next scheduled one is due."""
    async with database.read() as conn:
        rows = await conn.execute(
            select(sync_runs).order_by(sync_runs.c.requested_at.desc()).limit(limit)
        )
        runs = [_run(r) for r in rows.mappings()]
        next_run_at = (
            await conn.execute(
                select(sync_runs.c.next_run_at)
                .where(sync_runs.c.next_run_at.is_not(None))
                .order_by(sync_runs.c.requested_at.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
    return runs, next_run_at
