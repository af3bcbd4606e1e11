"""Identity puts the revocations back into Redis whenever the Redis run it marked is gone: a
Redis that came back from an older snapshot (marker present, later revocations missing) is
refilled as well as an empty one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.harness import admin, embedded_settings, stack


async def test_a_stale_marker_is_refilled(
    data_dir: Path, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERCATO_IDENTITY_REVOCATION_CHECK_SECONDS", "0.2")
    settings = embedded_settings(data_dir, redis_url=redis_url, redis_prefix=redis_prefix)
    client = aioredis.from_url(redis_url)
    try:
        async with stack(settings, ["accounts", "identity"]) as s:
            boss = await admin(s)
            out = await s.client.post("/api/v1/auth/logout", headers=boss.headers)
            assert out.status_code == 204
            assert (await s.client.get("/api/v1/auth/me", headers=boss.headers)).status_code == 401
            # What an older snapshot looks like: a marker from another run, no revocations.
            keys = [k async for k in client.scan_iter(f"{redis_prefix}:revoked:*")]
            assert keys
            await client.delete(*keys)
            await client.set(f"{redis_prefix}:revoked-synced", b"a-run-before-the-restart")
            for _ in range(50):
                if [k async for k in client.scan_iter(f"{redis_prefix}:revoked:*")]:
                    break
                await asyncio.sleep(0.1)
            me = await s.client.get("/api/v1/auth/me", headers=boss.headers)
            assert me.status_code == 401, "the logged-out token was accepted again"
    finally:
        keys = [k async for k in client.scan_iter(f"{redis_prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
