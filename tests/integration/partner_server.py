"""The partner sandbox under real uvicorn on a free port, for tests that talk to it over HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn

from mercato.integration.partner import create_partner_app


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1 and a free port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def partner(**options: Any) -> AsyncIterator[str]:
    """A partner sandbox (options of `create_partner_app`); yields its base URL."""
    async with serving(create_partner_app(**options)) as base:
        yield base


async def stats(base_url: str) -> dict[str, Any]:
    """The sandbox's counters."""
    async with httpx.AsyncClient(base_url=base_url) as raw:
        body: dict[str, Any] = (await raw.get("/_stats")).json()
        return body


async def fault(base_url: str, **body: Any) -> None:
    """Arm a sandbox fault (see `mercato.integration.partner`)."""
    async with httpx.AsyncClient(base_url=base_url) as raw:
        (await raw.post("/_faults", json=body)).raise_for_status()
