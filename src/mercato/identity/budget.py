"""Each client's token budget per rolling hour, shared by replicas and surviving restarts.

With Redis configured the platform's sliding-window store (a sorted set checked and written by
one Lua script) keeps it; without, identity's own database does (a row per token request, the
client's row locked while counting). Clients without a budget cost nothing here.
"""

from __future__ import annotations

from typing import Protocol

from mercato.identity.domain import Client
from mercato.identity.store import ClientRepository, GrantLog
from mercato.platform.token_stores import RedisTokenStore
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

    async def take(self, client: Client, now: float) -> float:
        """See `Budget`."""
        limit = client.token_budget_per_hour
        if limit is None:
            return 0.0
        async with self._uow() as uow:
            # The row lock (PostgreSQL; SQLite writers are serialised anyway) makes count and
            # record one step across replicas.
            await ClientRepository(uow.connection).get(client.client_id, for_update=True)
            log = GrantLog(uow.connection)
            stamps = await log.window(client.client_id, now=now, window=WINDOW)
            if len(stamps) >= limit:
                return max(0.001, stamps[len(stamps) - limit] + WINDOW - now)
            await log.record(client.client_id, now)
        return 0.0


class RedisBudget:
    """The budget in Redis, shared by every replica."""

    def __init__(self, store: RedisTokenStore) -> None:
        self._store = store

    async def take(self, client: Client, now: float) -> float:
        """See `Budget`."""
        limit = client.token_budget_per_hour
        if limit is None:
            return 0.0
        ok, retry_after = await self._store.try_acquire_budget(
            f"client:{client.client_id}", now=now, limit=limit, window=WINDOW
        )
        return 0.0 if ok else max(0.001, retry_after)
