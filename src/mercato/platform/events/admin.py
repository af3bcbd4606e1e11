"""Operating the backbone: dead letters (list, replay) and per-service event statistics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select, update

from mercato.platform.clock import utcnow
from mercato.platform.db import Database, UTCDateTime
from mercato.platform.errors import Conflict, NotFound
from mercato.platform.events.envelope import Envelope
from mercato.platform.events.tables import dead_letters, inbox, incoming, outbox
from mercato.platform.pagination import Page

Redeliver = Callable[[str, Envelope], Awaitable[None]]


class DeadLetterOut(BaseModel):
    """A dead letter as admins see it (event headers and the error, not the payload)."""

    id: str
    consumer: str
    event_id: str
    event_type: str
    error: str
    attempts: int
    failed_at: datetime
    replayed_at: datetime | None


class EventStats(BaseModel):
    """Health of one service's event plumbing."""

    service: str
    outbox_backlog: int
    oldest_unsent_age_seconds: float | None
    queued_incoming: int
    inbox_size: int
    dead_letters: int


async def list_dead_letters(
    database: Database, *, skip: int, limit: int, include_replayed: bool = False
) -> Page[DeadLetterOut]:
    """A page of dead letters, newest first."""
    where: list[Any] = [] if include_replayed else [dead_letters.c.replayed_at.is_(None)]
    async with database.read() as conn:
        total = (
            await conn.execute(select(func.count()).select_from(dead_letters).where(*where))
        ).scalar_one()
        rows = (
            await conn.execute(
                select(dead_letters)
                .where(*where)
                .order_by(dead_letters.c.failed_at.desc(), dead_letters.c.id)
                .offset(skip)
                .limit(limit)
            )
        ).mappings()
        items = [DeadLetterOut.model_validate(dict(row)) for row in rows]
    return Page(items=items, total=total, skip=skip, limit=limit)


async def replay_dead_letter(database: Database, dead_letter_id: str, redeliver: Redeliver) -> str:
    """Hand a dead letter back to its consumer; returns the event id. A replayed one is 409.

    The letter is claimed in one transaction and handed back outside it: the in-process transport
    writes the event into this same database, which must not wait on a transaction we hold.
    """
    async with database.read() as conn:
        row = (
            await conn.execute(select(dead_letters).where(dead_letters.c.id == dead_letter_id))
        ).first()
    if row is None:
        raise NotFound(f"no dead letter {dead_letter_id}")
    envelope = Envelope.from_json(row.envelope)
    async with database.transaction() as conn:
        claimed = await conn.execute(
            update(dead_letters)
            .where(dead_letters.c.id == dead_letter_id, dead_letters.c.replayed_at.is_(None))
            .values(replayed_at=utcnow())
        )
    if claimed.rowcount != 1:
        raise Conflict(f"dead letter {dead_letter_id} was already replayed")
    try:
        await redeliver(row.consumer, envelope)
    except BaseException:
        # The hand-back failed: it stays a dead letter, to be replayed again.
        async with database.transaction() as conn:
            await conn.execute(
                update(dead_letters)
                .where(dead_letters.c.id == dead_letter_id)
                .values(replayed_at=None)
            )
        raise
    return envelope.id


async def event_stats(database: Database) -> EventStats:
    """Outbox backlog and age, queued incoming events, inbox size and open dead letters."""
    async with database.read() as conn:
        backlog, oldest = (
            await conn.execute(
                select(func.count(), func.min(outbox.c.created_at)).where(
                    outbox.c.sent_at.is_(None)
                )
            )
        ).one()
        queued = (await conn.execute(select(func.count()).select_from(incoming))).scalar_one()
        inbox_size = (await conn.execute(select(func.count()).select_from(inbox))).scalar_one()
        dead = (
            await conn.execute(
                select(func.count())
                .select_from(dead_letters)
                .where(dead_letters.c.replayed_at.is_(None))
            )
        ).scalar_one()
    age = None
    if oldest is not None:
        oldest_at = UTCDateTime().process_result_value(oldest, database.engine.dialect)
        age = max(0.0, (utcnow() - oldest_at).total_seconds()) if oldest_at else None
    return EventStats(
        service=database.service,
        outbox_backlog=backlog,
        oldest_unsent_age_seconds=age,
        queued_incoming=queued,
        inbox_size=inbox_size,
        dead_letters=dead,
    )
