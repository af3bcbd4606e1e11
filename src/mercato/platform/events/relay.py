"""The outbox relay: publishes committed events and marks them sent only after confirmation."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.platform.aio import wait_any
from mercato.platform.clock import utcnow
from mercato.platform.db import Database
from mercato.platform.events.envelope import Envelope
from mercato.platform.events.tables import inbox, outbox
from mercato.platform.events.transport import Transport
from mercato.platform.idempotency import prune_idempotency_keys
from mercato.platform.metrics import published
from mercato.platform.tracing import publish_spans

log = structlog.get_logger("mercato.events")

# Sent events stay readable in the event log (`GET /api/v1/events/{service}/events`) this
# long unless `MERCATO_EVENT_LOG_KEEP` says otherwise.
PRUNE_AFTER = timedelta(days=7)
# A client retries a request within hours (Stripe keeps its keys a day, as here).
IDEMPOTENCY_KEEP = timedelta(days=1)
# A redelivery comes within minutes or hours (a broker or consumer restart); a week leaves room
# for a long outage. A dead letter replayed later was never in the inbox (it failed).
INBOX_KEEP = timedelta(days=7)
MAX_BACKOFF = 10.0

# Built once: a statement object memoizes its cache key, so each batch finds the compiled SQL
# without SQLAlchemy walking a new construct; the seqs are one expanding parameter.
_MARK_SENT = (
    update(outbox)
    .where(outbox.c.seq.in_(bindparam("seqs", expanding=True)))
    .values(sent_at=bindparam("sent_now"))
)


class OutboxRelay:
    """Moves one service's outbox to the transport, oldest first, in batches.

    A crash after publishing and before marking sent re-sends those events on the next run;
    consumers' inboxes make that harmless. On PostgreSQL the batch is locked with SKIP LOCKED so
    several workers can relay one outbox without sending the same batch together.
    """

    def __init__(
        self,
        database: Database,
        transport: Transport,
        *,
        batch_size: int = 500,
        poll: float = 1.0,
        keep_sent: timedelta = PRUNE_AFTER,
    ) -> None:
        self.database = database
        self.keep_sent = keep_sent
        self.transport = transport
        self.batch_size = batch_size
        self.poll = poll
        self._wake = asyncio.Event()
        self._last_prune = utcnow()
        # The batch query, built once for this relay's batch size (see `_MARK_SENT`).
        self._unsent = (
            select(outbox.c.seq, outbox.c.envelope)
            .where(outbox.c.sent_at.is_(None))
            .order_by(outbox.c.seq)
            .limit(batch_size)
        )
        self._unsent_locked = self._unsent.with_for_update(skip_locked=True)

    def wake(self) -> None:
        """Tell the relay new events were committed."""
        self._wake.set()

    async def run_once(self) -> int:
        """Publish one batch of unsent events; returns how many were sent."""
        if self.database.is_sqlite:
            async with self.database.read() as conn:
                rows = (await conn.execute(self._unsent)).all()
            if not rows:
                return 0
            envelopes = [Envelope.from_json(raw) for _, raw in rows]
            with publish_spans(self.database.service, envelopes):
                await self.transport.publish(envelopes)
            async with self.database.transaction() as conn:
                await self._mark_sent(conn, [seq for seq, _ in rows])
            published(self.database.service, (e.type for e in envelopes))
            return len(rows)
        async with self.database.transaction() as conn:
            rows = (await conn.execute(self._unsent_locked)).all()
            if not rows:
                return 0
            envelopes = [Envelope.from_json(raw) for _, raw in rows]
            with publish_spans(self.database.service, envelopes):
                await self.transport.publish(envelopes)
            await self._mark_sent(conn, [seq for seq, _ in rows])
        published(self.database.service, (e.type for e in envelopes))
        return len(rows)

    @staticmethod
    async def _mark_sent(conn: AsyncConnection, seqs: list[int]) -> None:
        await conn.execute(_MARK_SENT, {"seqs": seqs, "sent_now": utcnow()})

    async def prune(self) -> int:
        """Forget the platform's bookkeeping once it can no longer matter: events sent longer
        ago than the event log keeps them (a week by default), idempotency keys a day old,
        inbox rows a week old. Answers the outbox rows gone."""
        now = utcnow()
        async with self.database.transaction() as conn:
            result = await conn.execute(
                delete(outbox).where(outbox.c.sent_at < now - self.keep_sent)
            )
            await prune_idempotency_keys(conn, now - IDEMPOTENCY_KEEP)
            await conn.execute(delete(inbox).where(inbox.c.processed_at < now - INBOX_KEEP))
        return max(result.rowcount, 0)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; a failing transport is retried with a growing pause."""
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            try:
                sent = await self.run_once()
                if failures:
                    log.info("relay recovered", service=self.database.service)
                failures = 0
                if sent >= self.batch_size:
                    continue
                if utcnow() - self._last_prune > timedelta(minutes=10):
                    self._last_prune = utcnow()
                    await self.prune()
            except Exception as exc:
                failures += 1
                pause = min(MAX_BACKOFF, 0.1 * 2**failures)
                log.warning(
                    "relay publish failed",
                    service=self.database.service,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=pause,
                )
                await wait_any(stop, timeout=pause)
                continue
            await wait_any(self._wake, stop, timeout=self.poll)
