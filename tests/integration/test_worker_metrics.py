"""`mercato worker --metrics-port`: the worker's own counters on a port of its own, behind the
same access rule as every service's `/metrics`."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx

from mercato.platform.metrics_access import metrics_guard
from mercato.platform.metrics_server import metrics_app, start_metrics_server
from tests.harness import admin, embedded_settings, stack


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_worker_serves_its_metrics(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), ["accounts", "identity"]) as s:
        boss = await admin(s)
        port = _free_port()
        stop = asyncio.Event()
        task = start_metrics_server(s.platform, "127.0.0.1", port, stop)
        try:
            async with httpx.AsyncClient() as client:
                for _ in range(100):
                    try:
                        answer = await client.get(f"http://127.0.0.1:{port}/metrics")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.05)
            assert answer.status_code == 200
            assert "mercato_events_handled_total" in answer.text
        finally:
            stop.set()
            await task

        guard = metrics_guard(s.settings.metrics_allow, s.platform.auth.optional)
        transport = httpx.ASGITransport(app=metrics_app(guard), client=("203.0.113.9", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as outsider:
            assert (await outsider.get("/metrics")).status_code == 401
            assert (await outsider.get("/metrics", headers=boss.headers)).status_code == 200
