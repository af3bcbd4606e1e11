"""The unit of work: one transaction over a service's tables and its outbox."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.platform.clock import utcnow
from mercato.platform.db import Database
from mercato.platform.events.envelope import Envelope, EventPayload, make_envelope
from mercato.platform.events.tables import outbox
from mercato.platform.tracing import outbox_span

R = TypeVar("R")


class UnitOfWork:
    """Opens a transaction; events emitted inside it are committed with the change, or not at all.

    `async with uow:` commits on a normal exit and rolls back on an exception; after a commit that
    wrote events, `on_commit` is called so the relay can send them at once instead of on its poll.
    """

    def __init__(
        self,
        database: Database,
        source: str,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.database = database
        self.source = source
        self._on_commit = on_commit
        self._tx: AbstractAsyncContextManager[AsyncConnection] | None = None
        self._conn: AsyncConnection | None = None
        self.emitted: list[Envelope] = []
        self._pending: list[Envelope] = []
        self._after_commit: list[Callable[[], None]] = []

    @property
    def connection(self) -> AsyncConnection:
        """The open transaction's connection."""
        if self._conn is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._conn

    def repository(self, kind: Callable[[AsyncConnection], R]) -> R:
        """The repository `kind` over this transaction.

        Use cases name the repositories they work with through this (as in cosmicpython), so a
        fake unit of work can hand them in-memory ones and test them without a database.
        """
        return kind(self.connection)

    async def __aenter__(self) -> Self:
        self.emitted = []
        self._pending = []
        self._after_commit = []
        self._tx = self.database.transaction()
        self._conn = await self._tx.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tx is not None
        if exc_type is None:
            try:
                await self.flush()
            except BaseException as flush_error:
                tx, self._tx, self._conn = self._tx, None, None
                await tx.__aexit__(type(flush_error), flush_error, flush_error.__traceback__)
                raise
        tx, self._tx, self._conn = self._tx, None, None
        await tx.__aexit__(exc_type, exc, tb)
        if exc_type is None and self.emitted and self._on_commit is not None:
            self._on_commit()
        if exc_type is None:
            for callback in self._after_commit:
                callback()
        return None

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this transaction has committed (never if it rolls back): for
        what must only count what happened, such as metrics."""
        self._after_commit.append(callback)

    async def emit(
        self,
        payload: EventPayload,
        *,
        subject: str,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> Envelope:
        """Write an event to the outbox inside this transaction (buffered until `flush`)."""
        with outbox_span(payload.event_type, subject):
            envelope = make_envelope(
                payload,
                source=self.source,
                subject=subject,
                correlation_id=correlation_id,
                causation_id=causation_id,
            )
        self._pending.append(envelope)
        self.emitted.append(envelope)
        return envelope

    async def flush(self) -> None:
        """Write the events emitted so far to the outbox (done before commit anyway).

        Buffered so a transaction that emits many events writes them in one statement.
        """
        if not self._pending:
            return
        now = utcnow()
        rows = [
            {
                "event_id": envelope.id,
                "event_type": envelope.type,
                "subject": envelope.subject,
                "correlation_id": envelope.correlation_id,
                "envelope": envelope.to_json(),
                "created_at": now,
            }
            for envelope in self._pending
        ]
        self._pending = []
        await self.connection.execute(outbox.insert(), rows)


UnitOfWorkFactory = Callable[[], UnitOfWork]
