"""A short-lived in-process cache of registered clients (the token endpoint's hot path)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from mercato.identity.domain import Client
from mercato.platform.aio import SingleFlight


class ClientCache:
    """Clients read in the last `ttl` seconds, so the token endpoint's hot path skips the
    database. Only the embedded process uses it (a deletion there drops the entry at once);
    replicas run with `ttl` 0, which turns it off, so no replica serves a deleted client. Only
    known clients are kept, at most `size` of them."""

    def __init__(self, ttl: float, size: int = 1000) -> None:
        self.ttl = ttl
        self.size = size
        self._items: dict[str, tuple[float, Client]] = {}
        # Bumped by every `forget`: a read that started before a forget must not put back
        # what it read (the row may be gone by the time the read answers).
        self._generation = 0
        self._loads: SingleFlight[str, Client | None] = SingleFlight()

    def generation(self) -> int:
        """Take before reading a client from the database; hand to `put`."""
        return self._generation

    def get(self, client_id: str) -> Client | None:
        """The cached client, if fresh."""
        item = self._items.get(client_id)
        if item is None or item[0] <= time.monotonic():
            return None
        return item[1]

    async def load(
        self, client_id: str, read: Callable[[], Awaitable[Client | None]]
    ) -> Client | None:
        """The client from the cache while fresh, else from `read()`, which concurrent callers
        missing the same client share (an entry expiring under load costs one read, not one
        per waiting request). With `ttl` 0 every call reads: nothing is shared or kept."""
        cached = self.get(client_id)
        if cached is not None:
            return cached
        if self.ttl <= 0:
            return await read()

        # Taken now, not when the read's task first runs: a forget in between must count.
        read_since = self._generation

        async def read_and_keep() -> Client | None:
            client = await read()
            if client is not None:
                self.put(client, read_since)
            return client

        return await self._loads.run(client_id, read_and_keep)

    def put(self, client: Client, read_since: int) -> None:
        """Remember a client just read, unless something was forgotten since the read began."""
        if self.ttl <= 0 or read_since != self._generation:
            return
        if len(self._items) >= self.size:
            self._items.pop(next(iter(self._items)))
        self._items[client.client_id] = (time.monotonic() + self.ttl, client)

    def forget(self, client_id: str) -> None:
        """Drop a client (deleted or changed here)."""
        self._generation += 1
        self._items.pop(client_id, None)
        # A read in flight may have begun before the deletion: later callers read afresh.
        self._loads.forget(client_id)
