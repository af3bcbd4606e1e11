"""The event log: what one service published, read from its outbox (sent rows stay a while).

Payload fields a contract names secret (`EventPayload.secret_fields`, such as `user.created`'s
password hash) are masked: the log is for people, and people never see those.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import func, select

from mercato.platform.db import Database
from mercato.platform.events.envelope import REDACTED, Envelope, EventPayload
from mercato.platform.events.tables import outbox
from mercato.platform.pagination import Page


class LoggedEvent(BaseModel):
    """One published (or still waiting) event as the log shows it."""

    id: str
    type: str
    version: int
    source: str
    subject: str
    occurred_at: datetime
    correlation_id: str
    causation_id: str | None
    data: dict[str, Any]
    status: Literal["sent", "pending"]
    sent_at: datetime | None


@dataclass(frozen=True)
class EventFilter:
    """Which events a page of the log shows (None: any)."""

    type: str | None = None
    subject: str | None = None
    correlation_id: str | None = None


def event_types() -> dict[str, type[EventPayload]]:
    """Every event payload model loaded in this process, by event type.

    Contracts subclass `EventPayload`; the platform finds them without importing any service.
    """
    found: dict[str, type[EventPayload]] = {}
    pending = list(EventPayload.__subclasses__())
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        kind = getattr(model, "event_type", None)
        if isinstance(kind, str):
            found.setdefault(kind, model)
    return found


def masked(envelope: Envelope, secrets: dict[str, frozenset[str]]) -> dict[str, Any]:
    """The envelope's payload with the fields its contract calls secret replaced."""
    hidden = secrets.get(envelope.type, frozenset())
    return {key: REDACTED if key in hidden else value for key, value in envelope.data.items()}


async def list_events(
    database: Database, flt: EventFilter, *, skip: int, limit: int
) -> Page[LoggedEvent]:
    """A page of the service's outbox, newest first, secret payload fields masked."""
    where: list[Any] = []
    if flt.type is not None:
        where.append(outbox.c.event_type == flt.type)
    if flt.subject is not None:
        where.append(outbox.c.subject == flt.subject)
    if flt.correlation_id is not None:
        where.append(outbox.c.correlation_id == flt.correlation_id)
    async with database.read() as conn:
        total = (
            await conn.execute(select(func.count()).select_from(outbox).where(*where))
        ).scalar_one()
        rows = (
            await conn.execute(
                select(outbox.c.envelope, outbox.c.sent_at)
                .where(*where)
                .order_by(outbox.c.seq.desc())
                .offset(skip)
                .limit(limit)
            )
        ).all()
    secrets = {kind: model.secret_fields for kind, model in event_types().items()}
    items = []
    for raw, sent_at in rows:
        envelope = Envelope.from_json(raw)
        items.append(
            LoggedEvent(
                id=envelope.id,
                type=envelope.type,
                version=envelope.version,
                source=envelope.source,
                subject=envelope.subject,
                occurred_at=envelope.occurred_at,
                correlation_id=envelope.correlation_id,
                causation_id=envelope.causation_id,
                data=masked(envelope, secrets),
                status="pending" if sent_at is None else "sent",
                sent_at=sent_at,
            )
        )
    return Page(items=items, total=total, skip=skip, limit=limit)
