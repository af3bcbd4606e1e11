"""A short-lived in-process cache of registered clients (the token endpoint's hot path)."""

from __future__ import annotations

import time

from mercato.identity.domain import Client


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

    def generation(self) -> int:
        """Take before reading a client from the database; hand to `put`."""
        return self._generation

    def get(self, client_id: str) -> Client | None:
        """The cached client, if fresh."""
        item = self._items.get(client_id)
        if item is None or item[0] <= time.monotonic():
            return None
        return item[1]

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
