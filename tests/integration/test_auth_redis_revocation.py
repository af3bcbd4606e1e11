"""Revocation shared through real Redis, and JWKS fetched from a real local HTTP server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mercato.platform.auth import (
    MemoryRevocationStore,
    RedisRevocationStore,
    RemoteJwksKeySource,
    SigningKey,
    StaticKeySource,
    TokenVerifier,
    generate_signing_key,
    issue_access_token,
    jwks,
)
from mercato.platform.errors import Unauthorized

ISSUER = "https://id.mercato.test"
AUDIENCE = "mercato"


def issue(key: SigningKey, subject: str = "user-1") -> tuple[str, dict[str, Any]]:
    return issue_access_token(
        key,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=subject,
        client_id="web",
        scopes=[],
        roles=["user"],
        lifetime_seconds=900,
    )


# --- Redis revocation -------------------------------------------------------------------------


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_redis_store_revokes_until_expiry(redis: aioredis.Redis, redis_prefix: str) -> None:
    store = RedisRevocationStore(redis, f"{redis_prefix}:revoked")
    expires_at = int(time.time()) + 600
    assert not await store.is_revoked("jti-1")
    await store.revoke("jti-1", expires_at)
    assert await store.is_revoked("jti-1")
    assert not await store.is_revoked("jti-2")
    # The key goes away on its own a little after the token would have expired.
    expire_at = await redis.expiretime(f"{redis_prefix}:revoked:jti-1")
    assert expires_at < expire_at <= expires_at + 120


async def test_redis_store_keeps_an_already_expired_jti_briefly(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    store = RedisRevocationStore(redis, f"{redis_prefix}:revoked")
    await store.revoke("old", int(time.time()) - 3600)
    assert await store.is_revoked("old")
    assert await redis.ttl(f"{redis_prefix}:revoked:old") >= 0


async def test_redis_store_refuses_a_revoked_clients_earlier_tokens(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    store = RedisRevocationStore(redis, f"{redis_prefix}:revoked")
    now = int(time.time())
    assert not await store.refuses("jti-1", "robot", now)
    await store.revoke_client("robot", now, now + 3600)
    assert await store.refuses("jti-1", "robot", now)
    assert await store.refuses("jti-1", "robot", now - 100)
    assert not await store.refuses("jti-1", "robot", now + 1)  # issued after the cut-off
    assert not await store.refuses("jti-1", "other", now)
    assert not await store.refuses("jti-1", None, now)
    await store.revoke("jti-2", now + 900)
    assert await store.refuses("jti-2", "other", now)
    assert await store.refuses("jti-2", None, now)
    expire_at = await redis.expiretime(f"{redis_prefix}:revoked:client:robot")
    assert now + 3600 < expire_at <= now + 3600 + 120


async def test_revocation_is_seen_by_every_verifier(
    redis_url: str, redis: aioredis.Redis, redis_prefix: str
) -> None:
    # Two verifiers with their own Redis connections stand for two service replicas.
    key = generate_signing_key()
    other = aioredis.Redis.from_url(redis_url)
    try:
        verifiers = [
            TokenVerifier(
                StaticKeySource(lambda: jwks([key])),
                RedisRevocationStore(client, f"{redis_prefix}:revoked"),
                issuer=ISSUER,
                audience=AUDIENCE,
            )
            for client in (redis, other)
        ]
        token, claims = issue(key)
        for verifier in verifiers:
            assert (await verifier.verify(token)).jti == claims["jti"]  # now cached in each
        await verifiers[0].revocations.revoke(claims["jti"], claims["exp"])
        for verifier in verifiers:
            with pytest.raises(Unauthorized, match="token revoked"):
                await verifier.verify(token)
    finally:
        await other.aclose()


# --- Remote JWKS --------------------------------------------------------------------------------


class JwksServer:
    """A real uvicorn server publishing a JWKS the test can rotate, break and stop."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = keys
        self.requests = 0
        self.broken = False
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/.well-known/jwks.json"
        app = Starlette(routes=[Route("/.well-known/jwks.json", self._jwks)])
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def _jwks(self, _: Request) -> Response:
        self.requests += 1
        if self.broken:
            return Response("upstream trouble", status_code=503)
        return JSONResponse(jwks(self.keys))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    srv = JwksServer([generate_signing_key()])
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as client:
        yield client


async def test_remote_jwks_fetches_once_and_caches(
    server: JwksServer, http: httpx.AsyncClient
) -> None:
    source = RemoteJwksKeySource(server.url, http, clock=FakeClock())
    kid = server.keys[0].kid
    assert (await source.get(kid)) is not None
    assert (await source.get(kid)) is not None
    assert server.requests == 1


async def test_remote_jwks_refetches_on_unknown_kid_but_rate_limited(
    server: JwksServer, http: httpx.AsyncClient
) -> None:
    clock = FakeClock()
    source = RemoteJwksKeySource(server.url, http, clock=clock, min_refetch_interval=10)
    assert await source.get(server.keys[0].kid) is not None
    # identity rotates: a new key signs, the old one still verifies.
    new_key = generate_signing_key()
    server.keys = [new_key, *server.keys]
    clock.now += 11
    found = await source.get(new_key.kid)
    assert found is not None and found.key_id == new_key.kid
    assert server.requests == 2
    # A flood of made-up kids costs at most one fetch per interval.
    for i in range(50):
        assert await source.get(f"bogus-{i}") is None
    assert server.requests == 2
    clock.now += 10
    assert await source.get("bogus-again") is None
    assert server.requests == 3


async def test_concurrent_misses_share_one_fetch(
    server: JwksServer, http: httpx.AsyncClient
) -> None:
    source = RemoteJwksKeySource(server.url, http, clock=FakeClock())
    kid = server.keys[0].kid
    results = await asyncio.gather(*(source.get(kid) for _ in range(20)))
    assert all(r is not None for r in results)
    assert server.requests == 1


async def test_remote_jwks_serves_cached_keys_while_server_is_down(
    server: JwksServer, http: httpx.AsyncClient
) -> None:
    clock = FakeClock()
    source = RemoteJwksKeySource(server.url, http, clock=clock, ttl=300)
    verifier = TokenVerifier(source, MemoryRevocationStore(), issuer=ISSUER, audience=AUDIENCE)
    key = server.keys[0]
    token, _ = issue(key)
    assert (await verifier.verify(token)).sub == "user-1"

    await server.stop()
    clock.now += 301  # the cache is stale: the refetch is attempted, fails, cache kept
    assert await source.get(key.kid) is not None
    # A token never seen before (so not in the verification cache) still verifies.
    other, _ = issue(key, subject="user-2")
    assert (await verifier.verify(other)).sub == "user-2"


async def test_remote_jwks_keeps_cache_on_error_answers(
    server: JwksServer, http: httpx.AsyncClient
) -> None:
    clock = FakeClock()
    source = RemoteJwksKeySource(server.url, http, clock=clock, ttl=300)
    kid = server.keys[0].kid
    assert await source.get(kid) is not None
    server.broken = True
    clock.now += 301
    assert await source.get(kid) is not None
    assert server.requests == 2


async def test_remote_jwks_with_server_down_from_the_start(http: httpx.AsyncClient) -> None:
    srv = JwksServer([generate_signing_key()])  # bound but never serving
    srv._sock.close()
    source = RemoteJwksKeySource(srv.url, http, clock=FakeClock())
    assert await source.get(srv.keys[0].kid) is None
    assert await source.refresh() is False
