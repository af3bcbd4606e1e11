"""The embedded transport: events go into each consumer's own durable queue table.

A relay's publish is confirmed once the event is committed in the consumer's database, so a
restart loses nothing; the consumer drains that table with retries that never block the events
behind a failing one.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

import structlog
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.platform.aio import wait_any
from mercato.platform.db import Database, insert_ignore
from mercato.platform.events.consumer import Delivery, EventConsumer, Outcome
from mercato.platform.events.envelope import Envelope
from mercato.platform.events.tables import incoming
from mercato.platform.events.transport import ConsumerSpec
from mercato.platform.migrations import upgrade

log = structlog.get_logger("mercato.events")

# The drain loop's statements, built once: a statement object memoizes its cache key, so each
# execution finds the compiled SQL without SQLAlchemy walking a new construct; lists of seqs
# are one expanding parameter rather than an IN-list built per batch.
_DUE = (
    select(incoming.c.seq, incoming.c.envelope, incoming.c.attempts)
    .where(
        incoming.c.consumer == bindparam("consumer"), incoming.c.available_at <= bindparam("now")
    )
    .order_by(incoming.c.seq)
    .limit(bindparam("limit"))
)
_REMOVE_MANY = delete(incoming).where(incoming.c.seq.in_(bindparam("seqs", expanding=True)))
_REMOVE_ONE = delete(incoming).where(incoming.c.seq == bindparam("row_seq"))
_RESCHEDULE = (
    update(incoming)
    .where(incoming.c.seq == bindparam("row_seq"))
    .values(attempts=bindparam("next_attempts"), available_at=bindparam("due"))
)


class QueueTarget(Protocol):
    """Where the in-process transport commits events for one consumer."""

    @property
    def name(self) -> str:
        """The consumer's name."""
        ...

    def accepts(self, envelope: Envelope) -> bool:
        """Whether the consumer subscribes to the envelope's type."""
        ...

    async def enqueue(self, envelopes: Sequence[Envelope]) -> None:
        """Commit events to the consumer's queue."""
        ...


async def _enqueue(database: Database, consumer: str, envelopes: Sequence[Envelope]) -> bool:
    """Commit events to `consumer`'s queue table in `database`; answers whether any were given."""
    if not envelopes:
        return False
    now = time.time()
    rows = [
        {
            "consumer": consumer,
            "event_id": env.id,
            "event_type": env.type,
            "envelope": env.to_json(),
            "attempts": 0,
            "available_at": now,
        }
        for env in envelopes
    ]
    async with database.transaction() as conn:
        await insert_ignore(conn, incoming, rows, ["consumer", "event_id"])
    return True


class InProcessQueue:
    """One consumer's durable queue in its own database, and the loop that drains it."""

    def __init__(self, consumer: EventConsumer, *, batch_size: int = 200, poll: float = 1.0):
        self.consumer = consumer
        self.batch_size = batch_size
        self.poll = poll
        self._wake = asyncio.Event()
        self._retries: list[float] = []  # heap of when retries scheduled here fall due

    @property
    def name(self) -> str:
        """The consumer's name."""
        return self.consumer.name

    def accepts(self, envelope: Envelope) -> bool:
        """Whether this consumer subscribes to the envelope's type."""
        return envelope.type in self.consumer.subscription.event_types

    def wake(self) -> None:
        """Tell the drain loop there is work."""
        self._wake.set()

    async def enqueue(self, envelopes: Sequence[Envelope]) -> None:
        """Commit events to this consumer's queue (a repeat of a queued event is ignored)."""
        if await _enqueue(self.consumer.database, self.name, envelopes):
            self.wake()

    async def run_once(self) -> int:
        """Process the events that are due now; returns how many were attempted."""
        async with self.consumer.database.read() as conn:
            rows = (
                await conn.execute(
                    _DUE, {"consumer": self.name, "now": time.time(), "limit": self.batch_size}
                )
            ).all()
        if not rows:
            return 0
        envelopes = [Envelope.from_json(raw) for _, raw, _ in rows]
        # First deliveries go through together (see `handle_batch`); retried events, and any the
        # batch left, one by one, so a failing event never holds back the ones behind it.
        first = [(row[0], env) for row, env in zip(rows, envelopes, strict=True) if row[2] == 0]
        settled: set[int] = set()
        if len(first) > 1:
            seqs = [seq for seq, _ in first]

            async def remove_applied(conn: AsyncConnection, indexes: Sequence[int]) -> None:
                applied = [seqs[i] for i in indexes]
                await conn.execute(_REMOVE_MANY, {"seqs": applied})

            results = await self.consumer.handle_batch([e for _, e in first], remove_applied)
            for (seq, envelope), result in zip(first, results, strict=True):
                if result is not None:
                    settled.add(seq)
                    await self._conclude(seq, envelope, 0, result)
        for (seq, _, attempts), envelope in zip(rows, envelopes, strict=True):
            if seq not in settled:
                await self._process(seq, envelope, attempts)
        return len(rows)

    async def _process(self, seq: int, envelope: Envelope, attempts: int) -> None:
        """Apply one event in its own transaction; schedule a retry or bury it on failure."""
        result = await self.consumer.handle(envelope, attempts, in_transaction=self._remover(seq))
        await self._conclude(seq, envelope, attempts, result)

    @staticmethod
    def _remover(seq: int) -> Callable[[AsyncConnection], Awaitable[None]]:
        async def remove(conn: AsyncConnection) -> None:
            await conn.execute(_REMOVE_ONE, {"row_seq": seq})

        return remove

    async def _conclude(
        self, seq: int, envelope: Envelope, attempts: int, result: Delivery
    ) -> None:
        """Schedule the retry or bury the event as `result` says (applied ones are gone)."""
        if result.outcome is Outcome.RETRY:
            due = time.time() + result.delay
            async with self.consumer.database.transaction() as conn:
                await conn.execute(
                    _RESCHEDULE, {"row_seq": seq, "next_attempts": attempts + 1, "due": due}
                )
            heapq.heappush(self._retries, due)
        elif result.outcome is Outcome.DEAD:
            await self.consumer.bury(envelope, attempts + 1, result.error or "", self._remover(seq))

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest waiting event is due, or None when the queue is empty."""
        async with self.consumer.database.read() as conn:
            earliest = (
                await conn.execute(
                    select(func.min(incoming.c.available_at)).where(
                        incoming.c.consumer == self.name
                    )
                )
            ).scalar()
        return None if earliest is None else max(0.0, float(earliest) - time.time())

    def _next_retry_in(self) -> float | None:
        # Retries this loop scheduled are remembered in memory, so a quiet loop does not query
        # the table for them after every batch; anything else (events queued by another
        # process) is found by the poll.
        now = time.time()
        while self._retries and self._retries[0] <= now - 1.0:
            heapq.heappop(self._retries)  # long due: the last run took it
        return max(0.0, self._retries[0] - now) if self._retries else None

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until `stop` is set, sleeping until woken, the next retry is due, or the poll."""
        try:
            first_due = await self.next_due_in()
            if first_due is not None:
                heapq.heappush(self._retries, time.time() + first_due)
        except Exception:
            log.exception("in-process consumer could not read its queue", consumer=self.name)
        while not stop.is_set():
            self._wake.clear()
            try:
                done = await self.run_once()
                if done >= self.batch_size:
                    continue
                due = self._next_retry_in()
            except Exception:
                log.exception("in-process consumer loop failed", consumer=self.name)
                due = self.poll
            timeout = self.poll if due is None else min(self.poll, max(due, 0.005))
            await wait_any(self._wake, stop, timeout=timeout)


class ParkedQueue:
    """The queue of a consumer of the installation that does not run in this process.

    Events for it are committed to the `event_incoming` table of its own database, exactly as
    for a running consumer, and wait there until the service starts (here or in another process
    on the same database) and drains them. Without this, an event published while its consumer
    is absent would be marked sent and never reach it.
    """

    def __init__(self, name: str, database: Database, event_types: Iterable[str]) -> None:
        self._name = name
        self.database = database
        self.event_types = frozenset(event_types)

    @property
    def name(self) -> str:
        """The consumer's name."""
        return self._name

    def accepts(self, envelope: Envelope) -> bool:
        """Whether the absent consumer subscribes to the envelope's type."""
        return envelope.type in self.event_types

    async def enqueue(self, envelopes: Sequence[Envelope]) -> None:
        """Commit events to the absent consumer's queue table."""
        await _enqueue(self.database, self.name, envelopes)


class InProcessTransport:
    """Delivers published events into the queue of every consumer that subscribes to them."""

    def __init__(self, *, batch_size: int = 200, poll: float = 1.0) -> None:
        self.batch_size = batch_size
        self.poll = poll
        self._queues: dict[str, QueueTarget] = {}
        self._parked: list[Database] = []

    @property
    def crosses_processes(self) -> bool:
        """No: events reach only the consumers attached in this process."""
        return False

    def attach(self, queue: QueueTarget) -> None:
        """Register a consumer's queue (a running one, or a parked one)."""
        self._queues[queue.name] = queue

    async def start(self) -> None:
        """Nothing to connect."""

    def runner(self, consumer: EventConsumer) -> InProcessQueue:
        """The drain loop of one consumer of this process, attached so publishes reach it."""
        queue = InProcessQueue(consumer, batch_size=self.batch_size, poll=self.poll)
        self.attach(queue)
        return queue

    async def declare(self, consumers: Sequence[ConsumerSpec]) -> None:
        """Park every consumer that has no running queue here (see `ParkedQueue`)."""
        for spec in consumers:
            if spec.name in self._queues:
                continue
            database = Database(spec.name, spec.database_url)
            await upgrade(database, [])  # only the platform's event tables
            self._parked.append(database)
            self.attach(ParkedQueue(spec.name, database, spec.event_types))

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Commit each event into every subscribed consumer's queue before returning.

        The queues live in different databases, so their commits go together rather than one
        after another (an `order.placed` reaches wallet and catalog in one commit's time). Every
        commit has settled before this returns or raises: a failed one is sent again by the
        relay, and the queues that already have the event ignore the repeat.
        """
        batches = [
            (queue, [env for env in envelopes if queue.accepts(env)])
            for queue in self._queues.values()
        ]
        results = await asyncio.gather(
            *(queue.enqueue(mine) for queue, mine in batches if mine), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def redeliver(self, consumer: str, envelope: Envelope) -> None:
        """Queue one event again for one consumer."""
        await self._queues[consumer].enqueue([envelope])

    async def is_ready(self) -> bool:
        """Always: there is nothing to connect to (each database has its own check)."""
        return True

    async def close(self) -> None:
        """Forget the queues and close the parked consumers' databases."""
        self._queues.clear()
        parked, self._parked = self._parked, []
        for database in parked:
            await database.dispose()
