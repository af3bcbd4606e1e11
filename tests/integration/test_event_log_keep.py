"""Sent events stay in the outbox (the event log) as long as `MERCATO_EVENT_LOG_KEEP` says."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mercato.platform.clock import utcnow
from mercato.platform.db import Database
from mercato.platform.events.inprocess import InProcessTransport
from mercato.platform.events.relay import OutboxRelay
from mercato.platform.events.tables import outbox
from mercato.platform.migrations import upgrade
from mercato.platform.settings import Settings


def test_the_setting_reads_a_duration() -> None:
    assert Settings().event_log_keep == 7 * 86400
    assert Settings(event_log_keep="2h").event_log_keep == 7200


async def test_a_shorter_keep_prunes_sooner(database_url: str) -> None:
    db = Database("producer", database_url)
    await upgrade(db, [])
    now = utcnow()
    row = {"event_type": "thing.happened", "subject": "s", "envelope": "{}", "created_at": now}
    try:
        async with db.transaction() as conn:
            await conn.execute(
                outbox.insert(),
                [
                    {**row, "event_id": "sent-3h", "sent_at": now - timedelta(hours=3)},
                    {**row, "event_id": "sent-1h", "sent_at": now - timedelta(hours=1)},
                ],
            )
        relay = OutboxRelay(db, InProcessTransport(), keep_sent=timedelta(hours=2))
        assert await relay.prune() == 1
        async with db.read() as conn:
            left = set((await conn.execute(select(outbox.c.event_id))).scalars())
        assert left == {"sent-1h"}
    finally:
        await db.dispose()
