"""Every cache on the token path is single-flight: N callers missing at once cost one load."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mercato.identity import keyring as keyring_module
from mercato.identity.cache import ClientCache
from mercato.identity.domain import Client
from mercato.identity.keyring import Keyring, KeysUnavailable
from mercato.platform.aio import SingleFlight
from mercato.platform.auth import RemoteJwksKeySource, StaticKeySource, generate_signing_key, jwks

N = 50


def a_client(client_id: str = "bot") -> Client:
    return Client(client_id, "Bot", "hash", ("catalog.read",), ("client_credentials",), None,
                  datetime.now(UTC))  # fmt: skip


class CountingRead:
    """A slow read that counts its calls."""

    def __init__(self, answer: Any) -> None:
        self.calls = 0
        self.answer = answer

    async def __call__(self) -> Any:
        self.calls += 1
        await asyncio.sleep(0.01)
        return self.answer


async def test_single_flight_shares_one_run_and_forgets_on_request() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    read = CountingRead(7)
    assert await asyncio.gather(*(flight.run("k", read) for _ in range(N))) == [7] * N
    assert read.calls == 1
    await flight.run("k", read)  # landed: the next call loads again
    assert read.calls == 2


async def test_single_flight_error_reaches_every_caller_and_is_not_kept() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def fail() -> int:
        await asyncio.sleep(0.01)
        raise RuntimeError("database away")

    results = await asyncio.gather(
        *(flight.run("k", fail) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await flight.run("k", CountingRead(1)) == 1


async def test_client_cache_n_concurrent_misses_make_one_read() -> None:
    cache = ClientCache(ttl=60)
    read = CountingRead(a_client())
    clients = await asyncio.gather(*(cache.load("bot", read) for _ in range(N)))
    assert read.calls == 1 and all(c is not None and c.client_id == "bot" for c in clients)
    await cache.load("bot", read)  # fresh in the cache now
    assert read.calls == 1


async def test_client_cache_unknown_client_is_shared_but_not_kept() -> None:
    cache = ClientCache(ttl=60)
    read = CountingRead(None)
    assert await asyncio.gather(*(cache.load("ghost", read) for _ in range(N))) == [None] * N
    assert read.calls == 1
    await cache.load("ghost", read)
    assert read.calls == 2


async def test_client_cache_forget_during_a_read_makes_later_callers_read_again() -> None:
    cache = ClientCache(ttl=60)
    read = CountingRead(a_client())
    early = asyncio.ensure_future(cache.load("bot", read))
    await asyncio.sleep(0)  # the read is in flight...
    cache.forget("bot")  # ...when the client is deleted
    later = await cache.load("bot", CountingRead(None))
    await early
    assert later is None
    assert cache.get("bot") is None  # the early read began before the forget: not kept


async def test_client_cache_without_ttl_reads_every_time() -> None:
    cache = ClientCache(ttl=0)
    read = CountingRead(a_client())
    await asyncio.gather(*(cache.load("bot", read) for _ in range(5)))
    assert read.calls == 5


async def test_static_key_source_n_concurrent_misses_read_the_provider_once() -> None:
    key = generate_signing_key()
    provider = CountingRead(jwks([key]))
    source = StaticKeySource(provider)
    found = await asyncio.gather(*(source.get(key.kid) for _ in range(N)))
    assert provider.calls == 1 and all(k is not None for k in found)


async def test_remote_key_source_stale_cache_is_refetched_once() -> None:
    key = generate_signing_key()
    fetches = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(0.01)
        return httpx.Response(200, json=jwks([key]))

    now = [0.0]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        source = RemoteJwksKeySource(
            "http://identity/.well-known/jwks.json", client, ttl=300, clock=lambda: now[0]
        )
        await asyncio.gather(*(source.get(key.kid) for _ in range(N)))  # cold: one fetch
        assert fetches == 1
        now[0] += 301  # stale for everyone at once
        await asyncio.gather(*(source.get(key.kid) for _ in range(N)))
        assert fetches == 2


async def test_keyring_expiring_under_load_reads_the_table_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads = 0

    class FakeKeys:
        def __init__(self, conn: Any) -> None:
            pass

        async def all(self) -> list[Any]:
            nonlocal reads
            reads += 1
            await asyncio.sleep(0.01)
            return []

    @asynccontextmanager
    async def read() -> AsyncIterator[Any]:
        yield None

    monkeypatch.setattr(keyring_module, "KeyRepository", FakeKeys)
    ring = Keyring(
        None,  # type: ignore[arg-type]  # no writes in this test
        read,
        alg="ES256",
        passphrase=None,
        secrets=None,  # type: ignore[arg-type]  # nothing to open: the table is empty
        retention=timedelta(hours=1),
        refresh_every=0.05,
    )
    await ring.load()
    assert reads == 1
    await asyncio.sleep(0.06)  # the keys are due for a refresh
    results = await asyncio.gather(*(ring.signing_key() for _ in range(N)), return_exceptions=True)
    assert all(isinstance(r, KeysUnavailable) for r in results)  # the table is empty
    assert reads == 2
