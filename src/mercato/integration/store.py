"""Repositories over the integration tables; each works on the connection of one transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, and_, delete, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.integration.domain import ExternalOrder
from mercato.integration.tables import (
    client_credentials,
    export_files,
    external_orders,
    external_products,
    job_runs,
    job_state,
)
from mercato.platform.db import insert_ignore
from mercato.platform.ids import new_id_str


@dataclass(frozen=True)
class RunRecord:
    """One recorded run of a job."""

    id: str
    job: str
    tick: datetime | None
    trigger: str
    status: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int]
    output: str | None
    error: str | None


@dataclass(frozen=True)
class ExportFile:
    """A file the export job wrote."""

    file_name: str
    run_id: str
    rows: int
    size_bytes: int
    created_at: datetime


def _run(row: Row[Any]) -> RunRecord:
    return RunRecord(
        id=row.id,
        job=row.job,
        tick=row.tick,
        trigger=row.trigger,
        status=row.status,
        requested_at=row.requested_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        counts=json.loads(row.counts) if row.counts else {},
        output=row.output,
        error=row.error,
    )


class JobRuns:
    """Job schedule state and run records."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def next_run_at(self, job: str, first: datetime) -> datetime:
        """Where the job's schedule stands; `first` when no replica ever scheduled it."""
        await insert_ignore(self.conn, job_state, {"job": job, "next_run_at": first}, ["job"])
        stmt = select(job_state.c.next_run_at).where(job_state.c.job == job)
        value: datetime = (await self.conn.execute(stmt)).scalar_one()
        return value

    async def schedule_state(self) -> dict[str, datetime]:
        """job -> its next tick, for every job ever scheduled."""
        stmt = select(job_state.c.job, job_state.c.next_run_at)
        return {r.job: r.next_run_at for r in (await self.conn.execute(stmt)).all()}

    async def claim_tick(self, job: str, tick: datetime, row: dict[str, Any]) -> bool:
        """Insert the tick's run row; False when another replica already did."""
        values = {**row, "job": job, "tick": tick}
        return await insert_ignore(self.conn, job_runs, values, ["job", "tick"]) == 1

    async def advance(self, job: str, tick: datetime, next_run_at: datetime) -> None:
        """Move the schedule past `tick` (only if it still stands there)."""
        await self.conn.execute(
            update(job_state)
            .where(job_state.c.job == job, job_state.c.next_run_at == tick)
            .values(next_run_at=next_run_at)
        )

    async def add(self, job: str, **values: Any) -> str:
        """Record a run (manual or from the CLI); returns its id."""
        run_id = new_id_str()
        await self.conn.execute(job_runs.insert().values(id=run_id, job=job, **values))
        return run_id

    async def live_run(self, job: str, now: datetime) -> bool:
        """Whether a run of `job` is going on somewhere (its lease is current)."""
        stmt = select(func.count()).where(
            job_runs.c.job == job, job_runs.c.status == "running", job_runs.c.lease_until > now
        )
        return bool((await self.conn.execute(stmt)).scalar_one())

    async def queued(self, limit: int = 20) -> list[tuple[str, str]]:
        """(run id, job) of runs waiting for a scheduler, oldest first."""
        stmt = (
            select(job_runs.c.id, job_runs.c.job)
            .where(job_runs.c.status == "queued")
            .order_by(job_runs.c.requested_at)
            .limit(limit)
        )
        return [(r.id, r.job) for r in (await self.conn.execute(stmt)).all()]

    async def start_queued(self, run_id: str, owner: str, now: datetime, lease: datetime) -> bool:
        """Take a queued run (compare-and-set, so one scheduler wins)."""
        result = await self.conn.execute(
            update(job_runs)
            .where(job_runs.c.id == run_id, job_runs.c.status == "queued")
            .values(status="running", owner=owner, started_at=now, lease_until=lease)
        )
        return result.rowcount == 1

    async def heartbeat(self, run_id: str, owner: str, lease: datetime) -> bool:
        """Extend the lease of a run this owner is still running."""
        result = await self.conn.execute(
            update(job_runs)
            .where(
                job_runs.c.id == run_id,
                job_runs.c.owner == owner,
                job_runs.c.status == "running",
            )
            .values(lease_until=lease)
        )
        return result.rowcount == 1

    async def finish(
        self,
        run_id: str,
        *,
        status: str,
        now: datetime,
        counts: dict[str, int] | None = None,
        output: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record how a run ended."""
        await self.conn.execute(
            update(job_runs)
            .where(job_runs.c.id == run_id)
            .values(
                status=status,
                finished_at=now,
                lease_until=None,
                counts=json.dumps(counts or {}),
                output=output,
                error=error,
            )
        )

    async def reap(self, now: datetime) -> list[str]:
        """Mark runs whose runner stopped heart-beating as failed; returns their ids."""
        stale = and_(job_runs.c.status == "running", job_runs.c.lease_until <= now)
        ids = [r.id for r in (await self.conn.execute(select(job_runs.c.id).where(stale))).all()]
        if ids:
            await self.conn.execute(
                update(job_runs)
                .where(stale, job_runs.c.id.in_(ids))
                .values(
                    status="failed",
                    finished_at=now,
                    lease_until=None,
                    error="abandoned: its runner stopped without finishing (crash or kill)",
                )
            )
        return ids

    async def get(self, run_id: str) -> RunRecord | None:
        """One run."""
        row = (await self.conn.execute(select(job_runs).where(job_runs.c.id == run_id))).first()
        return _run(row) if row is not None else None

    async def page(self, job: str, skip: int, limit: int) -> tuple[list[RunRecord], int]:
        """Runs of `job`, newest first, and how many there are."""
        where = job_runs.c.job == job
        total = (await self.conn.execute(select(func.count()).where(where))).scalar_one()
        stmt = (
            select(job_runs)
            .where(where)
            .order_by(job_runs.c.requested_at.desc(), job_runs.c.id.desc())
            .offset(skip)
            .limit(limit)
        )
        return [_run(r) for r in (await self.conn.execute(stmt)).all()], int(total)

    async def last(self, job: str) -> RunRecord | None:
        """The newest run of `job`."""
        items, _ = await self.page(job, 0, 1)
        return items[0] if items else None


class ExportFiles:
    """The record of files the export job wrote."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, item: ExportFile) -> None:
        """Record a written file."""
        await self.conn.execute(export_files.insert().values(**item.__dict__))

    async def get(self, file_name: str) -> ExportFile | None:
        """The file of that name, if the job wrote it."""
        stmt = select(export_files).where(export_files.c.file_name == file_name)
        row = (await self.conn.execute(stmt)).first()
        return ExportFile(**row._mapping) if row is not None else None

    async def newest_first(self) -> list[str]:
        """Every recorded file name, newest first."""
        stmt = select(export_files.c.file_name).order_by(
            export_files.c.created_at.desc(), export_files.c.file_name.desc()
        )
        return list((await self.conn.execute(stmt)).scalars())

    async def page(self, skip: int, limit: int) -> tuple[list[ExportFile], int]:
        """Recorded files, newest first."""
        count = select(func.count()).select_from(export_files)
        total = (await self.conn.execute(count)).scalar_one()
        stmt = (
            select(export_files)
            .order_by(export_files.c.created_at.desc(), export_files.c.file_name.desc())
            .offset(skip)
            .limit(limit)
        )
        rows = (await self.conn.execute(stmt)).all()
        return [ExportFile(**r._mapping) for r in rows], int(total)

    async def remove(self, names: Sequence[str]) -> None:
        """Forget files (rotated away)."""
        if names:
            await self.conn.execute(delete(export_files).where(export_files.c.file_name.in_(names)))


class Fingerprints:
    """What was last imported per external record, to tell created/updated/unchanged apart."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def products(self, source: str, ids: Iterable[str]) -> dict[str, str]:
        """external_id -> fingerprint of the given products already seen."""
        stmt = select(external_products.c.external_id, external_products.c.fingerprint).where(
            external_products.c.source == source, external_products.c.external_id.in_(list(ids))
        )
        return {r.external_id: r.fingerprint for r in (await self.conn.execute(stmt)).all()}

    async def save_product(
        self, source: str, external_id: str, fingerprint: str, now: datetime, created: bool
    ) -> None:
        """Remember the state handed to catalog."""
        if created:
            values = {"first_seen_at": now, "updated_at": now, "fingerprint": fingerprint}
            await self.conn.execute(
                external_products.insert().values(source=source, external_id=external_id, **values)
            )
            return
        await self.conn.execute(
            update(external_products)
            .where(
                external_products.c.source == source,
                external_products.c.external_id == external_id,
            )
            .values(fingerprint=fingerprint, updated_at=now)
        )

    async def orders(self, source: str, ids: Iterable[str]) -> dict[str, str]:
        """external_id -> fingerprint of the given orders already imported."""
        stmt = select(external_orders.c.external_id, external_orders.c.fingerprint).where(
            external_orders.c.source == source, external_orders.c.external_id.in_(list(ids))
        )
        return {r.external_id: r.fingerprint for r in (await self.conn.execute(stmt)).all()}

    async def save_order(
        self, source: str, order: ExternalOrder, now: datetime, created: bool
    ) -> None:
        """Insert or update an imported order."""
        values: dict[str, Any] = {
            "status": order.status,
            "total": order.total,
            "currency": order.currency,
            "customer_email": order.customer_email,
            "items": json.dumps(order.items, default=str),
            "placed_at": order.placed_at,
            "fingerprint": order.fingerprint(),
            "updated_at": now,
        }
        if created:
            await self.conn.execute(
                external_orders.insert().values(
                    id=new_id_str(),
                    source=source,
                    external_id=order.external_id,
                    imported_at=now,
                    **values,
                )
            )
            return
        await self.conn.execute(
            update(external_orders)
            .where(
                external_orders.c.source == source,
                external_orders.c.external_id == order.external_id,
            )
            .values(**values)
        )


async def external_orders_page(
    conn: AsyncConnection, skip: int, limit: int, source: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Imported orders, newest placement first."""
    where = external_orders.c.source == source if source else true()
    count = select(func.count()).select_from(external_orders).where(where)
    total = (await conn.execute(count)).scalar_one()
    stmt = (
        select(external_orders)
        .where(where)
        .order_by(external_orders.c.placed_at.desc(), external_orders.c.external_id)
        .offset(skip)
        .limit(limit)
    )
    items = []
    for row in (await conn.execute(stmt)).all():
        item = dict(row._mapping)
        item.pop("fingerprint")
        item["items"] = json.loads(item["items"])
        item["total"] = Decimal(item["total"])
        items.append(item)
    return items, int(total)


class Credentials:
    """Client credentials kept by this service."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, name: str) -> tuple[str, str] | None:
        """(client_id, client_secret) kept under `name`."""
        stmt = select(client_credentials.c.client_id, client_credentials.c.client_secret).where(
            client_credentials.c.name == name
        )
        row = (await self.conn.execute(stmt)).first()
        return (row.client_id, row.client_secret) if row is not None else None

    async def put(self, name: str, client_id: str, client_secret: str, now: datetime) -> None:
        """Keep (or replace) the credentials under `name`."""
        await self.conn.execute(delete(client_credentials).where(client_credentials.c.name == name))
        await self.conn.execute(
            client_credentials.insert().values(
                name=name, client_id=client_id, client_secret=client_secret, stored_at=now
            )
        )
