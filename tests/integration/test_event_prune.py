"""The relay forgets bookkeeping that can no longer matter, and nothing that still can."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mercato.platform.clock import utcnow
from mercato.platform.db import Database
from mercato.platform.events.inprocess import InProcessTransport
from mercato.platform.events.relay import OutboxRelay
from mercato.platform.events.tables import inbox, outbox
from mercato.platform.idempotency import idempotency_keys
from mercato.platform.migrations import upgrade


async def test_prune_keeps_recent_and_unsent_rows(database_url: str) -> None:
    db = Database("producer", database_url)
    await upgrade(db, [])
    now = utcnow()
    old, recent = now - timedelta(days=8), now - timedelta(hours=1)
    row = {"event_type": "thing.happened", "subject": "s", "envelope": "{}", "created_at": old}
    try:
        async with db.transaction() as conn:
            await conn.execute(
                outbox.insert(),
                [
                    {**row, "event_id": "sent-old", "sent_at": old},
                    {**row, "event_id": "sent-recent", "sent_at": recent},
                    {**row, "event_id": "unsent-old", "sent_at": None},
                ],
            )
            await conn.execute(
                idempotency_keys.insert(),
                [
                    {
                        "scope": "orders",
                        "principal": "u",
                        "key": k,
                        "fingerprint": "f",
                        "created_at": t,
                    }
                    for k, t in (("key-old", old), ("key-recent", recent))
                ],
            )
            await conn.execute(
                inbox.insert(),
                [
                    {"consumer": "c", "event_id": "inbox-old", "processed_at": old},
                    {"consumer": "c", "event_id": "inbox-recent", "processed_at": recent},
                ],
            )

        assert await OutboxRelay(db, InProcessTransport()).prune() == 1

        async with db.read() as conn:
            outbox_left = set((await conn.execute(select(outbox.c.event_id))).scalars())
            keys_left = set((await conn.execute(select(idempotency_keys.c.key))).scalars())
            inbox_left = set((await conn.execute(select(inbox.c.event_id))).scalars())
        assert outbox_left == {"sent-recent", "unsent-old"}
        assert keys_left == {"key-recent"}
        assert inbox_left == {"inbox-recent"}
    finally:
        await db.dispose()
