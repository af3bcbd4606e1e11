"""Running one consumer's handlers: inbox de-duplication, retry decisions and dead letters."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.platform.clock import utcnow
from mercato.platform.db import Database, insert_ignore
from mercato.platform.events.envelope import (
    Envelope,
    current_causation_id,
    current_correlation_id,
)
from mercato.platform.events.tables import dead_letters, inbox
from mercato.platform.events.transport import Subscription
from mercato.platform.ids import new_id_str
from mercato.platform.metrics import Handled, handled
from mercato.platform.tracing import consumer_span
from mercato.platform.uow import UnitOfWork

log = structlog.get_logger("mercato.events")

InTransaction = Callable[[AsyncConnection], Awaitable[None]]
# Runs inside each commit of a batch with the indexes (into the batch) that commit applies.
BatchTransaction = Callable[[AsyncConnection, Sequence[int]], Awaitable[None]]
MAX_ERROR_CHARS = 2000
# Which of a batch's events this consumer already applied. Built once (its cache key is
# memoized) with the ids as one expanding parameter, instead of a new IN-list construct per batch.
_SEEN = select(inbox.c.event_id).where(
    inbox.c.consumer == bindparam("consumer"),
    inbox.c.event_id.in_(bindparam("ids", expanding=True)),
)


class Outcome(enum.Enum):
    """What became of one delivery attempt."""

    DONE = "done"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    DEAD = "dead"


_HANDLED = {
    Outcome.DONE: Handled.APPLIED,
    Outcome.DUPLICATE: Handled.DUPLICATE,
    Outcome.RETRY: Handled.RETRIED,
    Outcome.DEAD: Handled.DEAD_LETTERED,
}


@dataclass(frozen=True)
class Delivery:
    """The outcome of an attempt, with the delay before the next one or the final error."""

    outcome: Outcome
    delay: float = 0.0
    error: str | None = None


class _HandlerFailed(Exception):
    """A handler of a batch raised: which event (its position in the batch) and the error."""

    def __init__(self, position: int, error: Exception) -> None:
        super().__init__(position)
        self.position = position
        self.error = error


def retry_delay(attempt: int, delays: Sequence[float]) -> float | None:
    """The wait after failed attempt number `attempt` (0 = first), or None when none is left."""
    return delays[attempt] if 0 <= attempt < len(delays) else None


class EventConsumer:
    """Applies events to one service: each event's effect commits together with its inbox row."""

    def __init__(
        self,
        subscription: Subscription,
        database: Database,
        *,
        retry_delays: Sequence[float],
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.subscription = subscription
        self.name = subscription.consumer
        self.database = database
        self.retry_delays = tuple(retry_delays)
        self._on_commit = on_commit

    async def handle(
        self, envelope: Envelope, attempt: int, in_transaction: InTransaction | None = None
    ) -> Delivery:
        """Apply one event once; `in_transaction` joins the same commit (queue bookkeeping)."""
        handler = self.subscription.handlers.get(envelope.type)
        corr_token = current_correlation_id.set(envelope.correlation_id)
        cause_token = current_causation_id.set(envelope.id)
        try:
            async with UnitOfWork(self.database, self.name, self._on_commit) as uow:
                fresh = await insert_ignore(
                    uow.connection,
                    inbox,
                    {"consumer": self.name, "event_id": envelope.id, "processed_at": utcnow()},
                    ["consumer", "event_id"],
                )
                if fresh and handler is not None:
                    with consumer_span(self.name, envelope):
                        await handler(envelope, uow)
                if in_transaction is not None:
                    await in_transaction(uow.connection)
            return self._counted(envelope, Delivery(Outcome.DONE if fresh else Outcome.DUPLICATE))
        except Exception as exc:
            return self._failed(envelope, attempt, exc)
        finally:
            current_correlation_id.reset(corr_token)
            current_causation_id.reset(cause_token)

    def _failed(self, envelope: Envelope, attempt: int, exc: BaseException) -> Delivery:
        """The delivery a failed attempt earns: a retry after the schedule's delay, or dead."""
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        delay = retry_delay(attempt, self.retry_delays)
        log.warning(
            "event handler failed",
            consumer=self.name,
            attempt=attempt + 1,
            retry_in=delay,
            error_type=type(exc).__name__,
            exc_info=exc,
            **envelope.for_log(),
        )
        if delay is None:
            return self._counted(envelope, Delivery(Outcome.DEAD, error=error))
        return self._counted(envelope, Delivery(Outcome.RETRY, delay=delay, error=error))

    def _counted(self, envelope: Envelope, delivery: Delivery) -> Delivery:
        """`delivery`, counted in `mercato_events_handled_total` (and its lag when applied)."""
        handled(self.name, envelope.type, _HANDLED[delivery.outcome], envelope.occurred_at)
        return delivery

    async def handle_batch(
        self, envelopes: Sequence[Envelope], in_transaction: BatchTransaction | None = None
    ) -> list[Delivery | None]:
        """Apply first deliveries of several events in as few transactions as their handlers
        allow: one when every handler succeeds.

        A handler that raises is that event's failed first attempt (`RETRY` or `DEAD`, as
        `handle` would answer; it is not run again here); the events before it are applied
        again without it and those after it in the next transaction. `in_transaction` gets the
        indexes applied in each commit (queue bookkeeping). An entry is None when the batch
        stopped for another reason (the database, say): the caller applies those with `handle`.
        """
        results: list[Delivery | None] = [None] * len(envelopes)
        segments = [list(range(len(envelopes)))]
        while segments:
            segment = segments.pop(0)
            if not segment:
                continue
            try:
                outcomes = await self._apply(
                    [envelopes[i] for i in segment], segment, in_transaction
                )
            except _HandlerFailed as failed:
                position = failed.position
                bad = segment[position]
                results[bad] = self._failed(envelopes[bad], 0, failed.error)
                segments[0:0] = [segment[:position], segment[position + 1 :]]
                continue
            except Exception as exc:
                log.info(
                    "batch stopped; its other events go one by one",
                    consumer=self.name,
                    error_type=type(exc).__name__,
                )
                return results
            for index, outcome in zip(segment, outcomes, strict=True):
                results[index] = self._counted(envelopes[index], Delivery(outcome))
        return results

    async def _apply(
        self,
        envelopes: Sequence[Envelope],
        indexes: Sequence[int],
        in_transaction: BatchTransaction | None,
    ) -> list[Outcome]:
        ids = [envelope.id for envelope in envelopes]
        async with UnitOfWork(self.database, self.name, self._on_commit) as uow:
            seen = set(
                (await uow.connection.execute(_SEEN, {"consumer": self.name, "ids": ids})).scalars()
            )
            first_of: dict[str, int] = {}
            for position, envelope in enumerate(envelopes):
                if envelope.id not in seen:
                    first_of.setdefault(envelope.id, position)
            outcomes = [
                Outcome.DONE if first_of.get(e.id) == p else Outcome.DUPLICATE
                for p, e in enumerate(envelopes)
            ]
            if first_of:
                now = utcnow()
                await uow.connection.execute(
                    inbox.insert(),
                    [{"consumer": self.name, "event_id": i, "processed_at": now} for i in first_of],
                )
            for position in first_of.values():
                envelope = envelopes[position]
                handler = self.subscription.handlers.get(envelope.type)
                if handler is None:
                    continue
                corr_token = current_correlation_id.set(envelope.correlation_id)
                cause_token = current_causation_id.set(envelope.id)
                try:
                    with consumer_span(self.name, envelope):
                        await handler(envelope, uow)
                except Exception as exc:
                    raise _HandlerFailed(position, exc) from exc
                finally:
                    current_correlation_id.reset(corr_token)
                    current_causation_id.reset(cause_token)
            if in_transaction is not None:
                await in_transaction(uow.connection, indexes)
        return outcomes

    async def bury(
        self,
        envelope: Envelope,
        attempts: int,
        error: str,
        in_transaction: InTransaction | None = None,
    ) -> None:
        """Move an event that exhausted its retries to this service's dead letters."""
        async with self.database.transaction() as conn:
            await conn.execute(
                dead_letters.insert().values(
                    id=new_id_str(),
                    consumer=self.name,
                    event_id=envelope.id,
                    event_type=envelope.type,
                    envelope=envelope.to_json(),
                    error=error,
                    attempts=attempts,
                    failed_at=utcnow(),
                )
            )
            if in_transaction is not None:
                await in_transaction(conn)
        log.error(
            "event dead-lettered", consumer=self.name, attempts=attempts, **envelope.for_log()
        )
