"""A batch of first deliveries: one commit when all succeed; a failing handler is exactly that
event's failed first attempt, and the others still apply once (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.platform.db import Database
from mercato.platform.events import Envelope, EventPayload, make_envelope
from mercato.platform.events.consumer import EventConsumer, Outcome
from mercato.platform.events.tables import inbox
from mercato.platform.events.transport import Subscription
from mercato.platform.migrations import upgrade
from mercato.platform.uow import UnitOfWork

md = MetaData()
effects = Table(
    "batch_effects",
    md,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("subject", String(50), nullable=False),
)


class Noted(EventPayload):
    event_type: ClassVar[str] = "thing.noted"
    n: int


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database("batchsvc", database_url)
    await upgrade(db, [])
    async with db.transaction() as conn:
        await conn.run_sync(md.create_all)
    yield db
    await db.dispose()


async def test_a_failure_mid_batch_is_one_failed_attempt_and_the_rest_apply_once(
    database: Database,
) -> None:
    calls: Counter[str] = Counter()

    async def handler(envelope: Envelope, uow: UnitOfWork) -> None:
        calls[envelope.subject] += 1
        if envelope.subject == "bad":
            raise RuntimeError("cannot")
        await uow.connection.execute(effects.insert().values(subject=envelope.subject))

    consumer = EventConsumer(
        Subscription("batchsvc", {"thing.noted": handler}), database, retry_delays=(1.0, 5.0)
    )
    a, bad, c = (
        make_envelope(Noted(n=i), source="t", subject=name)
        for i, name in enumerate(("a", "bad", "c"))
    )
    committed: list[list[int]] = []

    async def bookkeeping(_: AsyncConnection, indexes: Sequence[int]) -> None:
        committed.append(list(indexes))

    results = await consumer.handle_batch([a, bad, c, a], bookkeeping)
    outcomes = [r.outcome if r else None for r in results]
    assert outcomes == [Outcome.DONE, Outcome.RETRY, Outcome.DONE, Outcome.DUPLICATE]
    assert (
        results[1] is not None and results[1].delay == 1.0 and "cannot" in (results[1].error or "")
    )
    assert calls["bad"] == 1  # the failure counts as its attempt; it is not run again here
    assert sorted(i for indexes in committed for i in indexes) == [0, 2, 3]
    async with database.read() as conn:
        applied = Counter(
            dict(
                (
                    await conn.execute(
                        select(effects.c.subject, func.count()).group_by(effects.c.subject)
                    )
                ).all()
            )
        )
        seen = set((await conn.execute(select(inbox.c.event_id))).scalars())
    assert applied == Counter({"a": 1, "c": 1})
    assert seen == {a.id, c.id}  # the failed one is not marked processed

    # Delivered again later, the applied ones are duplicates and nothing applies twice.
    again = await consumer.handle_batch([a, c])
    assert [r.outcome if r else None for r in again] == [Outcome.DUPLICATE, Outcome.DUPLICATE]
