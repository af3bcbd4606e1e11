"""Each client's token budget per rolling hour, shared by replicas and surviving restarts.

Both stores use the platform's one sliding-window counter (`mercato.platform.request_window`):
with Redis configured, its Redis form (one Lua script per request); without, identity's own
database (a fixed number of rows per client, the head row locked while counting;
concurrent requests share one write transaction). A request
costs the same whatever the hour has seen. Clients without a budget cost nothing here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.identity.domain import Client
from mercato.identity.store import BUDGET_WINDOW
from mercato.platform.request_window import BatchedSqlWindow, RedisRequestWindow
from mercato.platform.uow import UnitOfWorkFactory

WINDOW = 3600.0


class Budget(Protocol):
    """Takes one token from a client's hourly budget."""

    async def take(self, client: Client, now: float) -> float:
        """0 when a token may be issued (and counts it), else seconds until one may."""
        ...


class DatabaseBudget:
    """The budget in identity's database (embedded mode, or no Redis)."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow = uow_factory
        # Concurrent token requests share one write transaction (group commit).
        self._window = BatchedSqlWindow(BUDGET_WINDOW, self._transaction)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._uow() as uow:
            yield uow.connection

    async def take(self, client: Client, now: float) -> float:
        """See `Budget`."""
        limit = client.token_budget_per_hour
        if limit is None:
            return 0.0
        ok, wait = await self._window.take(client.client_id, now=now, limit=limit, window=WINDOW)
        return 0.0 if ok else max(0.001, wait)


class RedisBudget:
    """The budget in Redis, shared by every replica."""

    def __init__(self, window: RedisRequestWindow, prefix: str) -> None:
        self._window = window
        self._prefix = prefix

    async def take(self, client: Client, now: float) -> float:
        """See `Budget`."""
        limit = client.token_budget_per_hour
        if limit is None:
            return 0.0
        # The key the budget had when it lived in the token store, so an upgrade keeps it.
        key = f"{self._prefix}:token-requests:client:{client.client_id}"
        ok, wait = await self._window.take(key, now=now, limit=limit, window=WINDOW)
        return 0.0 if ok else max(0.001, wait)
