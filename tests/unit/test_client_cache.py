"""The embedded process's client cache: a read begun before a deletion never puts the deleted
client back (the row it read may be gone by the time the read answers)."""

from __future__ import annotations

from datetime import UTC, datetime

from mercato.identity.cache import ClientCache
from mercato.identity.domain import Client


def a_client(client_id: str = "bot") -> Client:
    return Client(client_id, "Bot", "hash", ("catalog.read",), ("client_credentials",), None,
                  datetime.now(UTC))  # fmt: skip


def test_a_read_is_cached_when_nothing_was_forgotten_meanwhile() -> None:
    cache = ClientCache(ttl=60)
    since = cache.generation()
    cache.put(a_client(), since)
    cached = cache.get("bot")
    assert cached is not None and cached.client_id == "bot"


def test_a_read_that_began_before_a_forget_is_not_cached() -> None:
    cache = ClientCache(ttl=60)
    since = cache.generation()  # a token request starts reading the row...
    cache.forget("bot")  # ...the client is deleted and the delete commits...
    cache.put(a_client(), since)  # ...and the read answers with the old row
    assert cache.get("bot") is None


def test_ttl_zero_caches_nothing() -> None:
    cache = ClientCache(ttl=0)
    cache.put(a_client(), cache.generation())
    assert cache.get("bot") is None
