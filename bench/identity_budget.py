"""Token-endpoint figures for `bench/identity.py` (issue 10): a client with a token budget next
to the same client without one, the budget's cost in the hour's first and last minute, and the
p99 of 32 keep-alive connections against `mercato run` over loopback, timeouts counted."""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from sqlalchemy import delete, insert
from tests.harness import Stack, admin

from mercato.identity import tables
from mercato.platform.db import Database

# The API's largest budget: a bench never spends it, so every request is counted and granted.
BIG_BUDGET = 10_000_000
HOUR = 3600.0


async def concurrently(count: int, workers: int, call: Callable[[], Awaitable[None]]) -> float:
    """Seconds to run `call()` `count` times with `workers` in flight."""
    queue = iter(range(count))

    async def worker() -> None:
        for _ in queue:
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started


async def register_client(
    client: httpx.AsyncClient, headers: dict[str, str], client_id: str, budget: int | None
) -> tuple[str, str]:
    """A machine client (`budget` tokens per hour, or none); answers its id and secret."""
    made = await client.post(
        "/api/v1/admin/clients",
        headers=headers,
        json={
            "client_id": client_id,
            "name": client_id,
            "scopes": ["catalog.read"],
            "token_budget_per_hour": budget,
        },
    )
    assert made.status_code == 201, made.text
    return client_id, made.json()["client_secret"]


async def clear_window(database: Database, client_id: str) -> None:
    """Forget the client's requests of the hour: its window as in the hour's first minute."""
    async with database.transaction() as conn:
        if hasattr(tables, "budget_stamps"):
            await conn.execute(
                delete(tables.budget_stamps).where(tables.budget_stamps.c.key == client_id)
            )
            await conn.execute(
                delete(tables.budget_heads).where(tables.budget_heads.c.key == client_id)
            )
        else:  # main before the window counter (one row per token), for before/after runs
            grants = tables.client_grants  # type: ignore[attr-defined]
            await conn.execute(delete(grants).where(grants.c.client_id == client_id))


async def fill_window(database: Database, client_id: str, stamps: int, now: float) -> None:
    """`stamps` requests spread over the past 59 minutes: the window in the hour's last minute."""
    ats = [now - HOUR + 60 + i * (HOUR - 60) / stamps for i in range(stamps)]
    await clear_window(database, client_id)
    async with database.transaction() as conn:
        if hasattr(tables, "budget_stamps"):
            rows = [{"key": client_id, "slot": i, "at": at} for i, at in enumerate(ats)]
            await conn.execute(insert(tables.budget_stamps), rows)
            await conn.execute(insert(tables.budget_heads), [{"key": client_id, "kept": stamps}])
        else:
            grants = tables.client_grants  # type: ignore[attr-defined]
            await conn.execute(insert(grants), [{"client_id": client_id, "at": at} for at in ats])


@dataclass
class BudgetFigures:
    """Medians over the rounds, tokens/s: no budget, budget (empty window), budget (full)."""

    plain: list[float]
    first_minute: list[float]
    last_minute: list[float]
    stamps: int


async def budget_rates(s: Stack, count: int, rounds: int, stamps: int) -> BudgetFigures:
    """Tokens/s (16 in flight, in-process ASGI) for a client without a budget, the same client
    with one in the hour's first minute, and in its last minute (window pre-filled with
    `stamps` requests), interleaved round by round."""
    boss = await admin(s)
    plain = await register_client(s.client, boss.headers, "bench-plain", None)
    budgeted = await register_client(s.client, boss.headers, "bench-budget", BIG_BUDGET)
    database = s.platform.contexts["identity"].database

    def grant(auth: tuple[str, str]) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            answer = await s.client.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, auth=auth
            )
            assert answer.status_code == 200, answer.text

        return call

    for auth in (plain, budgeted):
        await concurrently(50, 8, grant(auth))  # warm-up
    figures = BudgetFigures([], [], [], stamps)
    for _ in range(rounds):
        figures.plain.append(count / await concurrently(count, 16, grant(plain)))
        await clear_window(database, budgeted[0])
        figures.first_minute.append(count / await concurrently(count, 16, grant(budgeted)))
        await fill_window(database, budgeted[0], stamps, time.time())
        figures.last_minute.append(count / await concurrently(count, 16, grant(budgeted)))
    return figures


def token_request(client_id: str, secret: str) -> bytes:
    """A raw keep-alive `POST /oauth/token` (client_secret_basic)."""
    credentials = base64.b64encode(f"{client_id}:{secret}".encode())
    body = b"grant_type=client_credentials"
    return (
        b"POST /oauth/token HTTP/1.1\r\nHost: bench\r\nAuthorization: Basic "
        + credentials
        + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


async def read_answer(reader: asyncio.StreamReader) -> None:
    """Read one HTTP/1.1 answer with a Content-Length body; it must be a 200."""
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)


@dataclass
class LoadFigures:
    """What `under_connections` saw."""

    latencies: list[float]
    timeouts: int
    seconds: float

    @property
    def p99_ms(self) -> float:
        """The 99th percentile latency in ms."""
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[98] * 1000

    @property
    def rate(self) -> float:
        """Answered requests per second."""
        return len(self.latencies) / self.seconds


async def under_connections(
    port: int, request: bytes, *, connections: int, seconds: float, timeout: float = 2.0
) -> LoadFigures:
    """`connections` keep-alive connections sending `request` back to back for `seconds`, as
    `wrk -c32` does: a request unanswered after `timeout` (wrk's default, 2 s) counts as a
    timeout and its connection is replaced."""
    figures = LoadFigures([], 0, seconds)
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                try:
                    async with asyncio.timeout(timeout):
                        await writer.drain()
                        await read_answer(reader)
                except TimeoutError:
                    figures.timeouts += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                figures.latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return figures
