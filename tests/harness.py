"""Start the real platform inside a test, on the embedded or the distributed backend.

`stack(settings, services)` runs the platform's lifespan (migrations, transport, consumers,
relays, start-up hooks) and drives its ASGI app over httpx, so tests go through the same routes,
auth and event plumbing a user meets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from mercato.app import build_platform
from mercato.platform.runtime import Platform
from mercato.platform.settings import Settings

ADMIN_PASSWORD = "Admin-Pass-1234"
FAST_RETRIES = (0.05, 0.2, 0.5)


def embedded_settings(data_dir: Path, **overrides: Any) -> Settings:
    """SQLite files in `data_dir`, in-process events, in-memory shared state."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "admin_password": ADMIN_PASSWORD,
        "event_retry_delays": FAST_RETRIES,
        "relay_poll_seconds": 0.05,
        **overrides,
    }
    return Settings(**values)


def distributed_settings(
    data_dir: Path, database_url: str, broker_url: str, redis_url: str, **overrides: Any
) -> Settings:
    """PostgreSQL (a schema per service), RabbitMQ and Redis, isolated by a fresh tag."""
    tag = uuid.uuid4().hex[:8]
    return embedded_settings(
        data_dir,
        database_url=database_url,
        broker_url=broker_url,
        broker_exchange=f"t{tag}.events",
        broker_queue_prefix=f"t{tag}",
        redis_url=redis_url,
        redis_prefix=f"mercato-t:{tag}",
        **overrides,
    )


@dataclass
class Stack:
    """A started platform, its app and an HTTP client on it."""

    platform: Platform
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings


@asynccontextmanager
async def stack(settings: Settings, services: Sequence[str] | None = None) -> AsyncIterator[Stack]:
    """The platform with `services` (all by default), started; stopped on exit."""
    platform = build_platform(settings, services)
    app = platform.create_app("Mercato")
    await platform.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mercato.test") as client:
            yield Stack(platform, app, client, settings)
    finally:
        await platform.stop()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll `check` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")
