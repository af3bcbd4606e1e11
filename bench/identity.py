"""Identity's figures next to their baselines (issue 3). Prints; never fails on time.

- client-credentials tokens/s through the real app (ASGI, one worker, embedded SQLite), next to
  the same signature made in a bare loop (aim: >= 1,500 tokens/s and >= 25 % of the bare rate);
- per-request verification cost, first time and repeated (aim: repeated <= 10 us);
- logins/s with the argon2id parameters in use, and the p99 of concurrent /health calls during a
  login storm (aim: <= 20 ms: logins never block the event loop);
- login p99 during a flood of 200 concurrent registrations, each from its own address (so the
  per-address registration limit does not help: only the hashing pool's priority for logins
  does), next to the login p99 without the flood (aim: <= 1 s during the flood; issue 11).

Run: `python bench/identity.py [--tokens N] [--logins N] [--flood N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from tests.e2e.conftest import start_platform, stop_platform
from tests.harness import (
    ADMIN_PASSWORD,
    USER_PASSWORD,
    Stack,
    admin,
    embedded_settings,
    register_user,
    stack,
)

from mercato.identity.wiring import deps_of
from mercato.platform.auth import issue_access_token
from mercato.platform.logging import configure_logging
from mercato.platform.passwords import _hasher


async def concurrently(count: int, workers: int, call: Callable[[], Awaitable[None]]) -> float:
    """Seconds to run `call()` `count` times with `workers` in flight."""
    queue = iter(range(count))

    async def worker() -> None:
        for _ in queue:
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started


async def token_rates(s: Stack, count: int) -> tuple[float, float]:
    boss = await admin(s)
    made = await s.client.post(
        "/api/v1/admin/clients",
        headers=boss.headers,
        json={"client_id": "bench", "name": "bench", "scopes": ["catalog.read"]},
    )
    auth = ("bench", made.json()["client_secret"])

    async def grant() -> None:
        answer = await s.client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=auth
        )
        assert answer.status_code == 200, answer.text

    await concurrently(50, 8, grant)  # warm-up
    seconds = await concurrently(count, 16, grant)
    key = await deps_of(s.platform.contexts["identity"]).keyring.signing_key()
    started = time.perf_counter()
    for _ in range(count):
        issue_access_token(
            key,
            issuer=s.settings.issuer,
            audience=s.settings.audience,
            subject="bench",
            client_id="bench",
            scopes=["catalog.read"],
            roles=None,
            lifetime_seconds=3600,
        )
    bare = time.perf_counter() - started
    return count / seconds, count / bare


async def verification_costs(s: Stack, count: int) -> tuple[float, float]:
    key = await deps_of(s.platform.contexts["identity"]).keyring.signing_key()
    tokens = [
        issue_access_token(
            key,
            issuer=s.settings.issuer,
            audience=s.settings.audience,
            subject=f"user-{i}",
            client_id="bench",
            scopes=[],
            roles=["user"],
            lifetime_seconds=900,
        )[0]
        for i in range(count)
    ]
    verifier = s.platform.verifier
    started = time.perf_counter()
    for token in tokens:
        await verifier.verify(token)
    first = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for token in tokens:
        await verifier.verify(token)
    repeated = (time.perf_counter() - started) / count
    return first * 1e6, repeated * 1e6


async def login_storm(s: Stack, count: int) -> tuple[float, float, float]:
    # One user per worker: attempts on one account are counted up front by the throttle, so
    # a single account is not meant to take 8 logins at once.
    workers = 8
    for i in range(workers):
        await register_user(s, f"bench{i}")
    latencies: list[float] = []
    done = asyncio.Event()
    queue = iter(range(count))

    async def worker(i: int) -> None:
        body = {"username_or_email": f"bench{i}", "password": USER_PASSWORD}
        for _ in queue:
            answer = await s.client.post("/api/v1/auth/login", json=body)
            assert answer.status_code == 200, answer.text

    async def probe() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await s.client.get("/health")
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)

    prober = asyncio.create_task(probe())
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(i) for i in range(workers)))
    finally:
        done.set()
        await prober
    seconds = time.perf_counter() - started
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else float("nan")
    return count / seconds, p99 * 1000, len(latencies)


def p99(samples: list[float]) -> float:
    """The 99th percentile (the largest sample when there are few)."""
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


async def login_during_flood(s: Stack, flood: int, logins: int = 20) -> tuple[float, float, str]:
    """Login p99 (ms) alone, then while `flood` clients keep registering (each one request at a
    time, back when `Retry-After` says), and what the flood was answered (status: count)."""
    await register_user(s, "floodcheck")
    body = {"username_or_email": "floodcheck", "password": USER_PASSWORD}

    async def timed_logins() -> list[float]:
        latencies = []
        for _ in range(logins):
            started = time.perf_counter()
            answer = await s.client.post("/api/v1/auth/login", json=body)
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
        return latencies

    quiet = await timed_logins()
    done = asyncio.Event()
    answers: dict[int, int] = {}
    # One address per flooding client, as from a botnet: the per-address limit lets each one
    # register, so the hashing pool takes the whole flood.
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=s.app, client=(f"10.{i // 250}.{i % 250}.9", 4000)),
            base_url="http://mercato.test",
            timeout=120,
        )
        for i in range(flood)
    ]

    async def flooder(i: int) -> None:
        n = 0
        while not done.is_set():
            n += 1
            password = f"Flood-Pass-{i}-{n}"
            answer = await clients[i].post(
                "/api/v1/accounts/register",
                json={
                    "username": f"flood{i}x{n}",
                    "email": f"flood{i}x{n}@example.com",
                    "password": password,
                    "confirm_password": password,
                },
            )
            answers[answer.status_code] = answers.get(answer.status_code, 0) + 1
            if answer.status_code != 201:  # turned away: come back when told, keeping 200 busy
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))

    flooders = [asyncio.create_task(flooder(i)) for i in range(flood)]
    await asyncio.sleep(1.0)  # let the flood fill the hashing pool first
    try:
        loud = await timed_logins()
    finally:
        done.set()
        await asyncio.gather(*flooders)
        for client in clients:
            await client.aclose()
    seen = ", ".join(f"{code}: {count}" for code, count in sorted(answers.items()))
    return p99(quiet) * 1000, p99(loud) * 1000, seen


async def keep_alive_requests(port: int, count: int, request: bytes) -> None:
    """Send `request` `count` times on one keep-alive connection, reading each answer.

    A bare socket client: httpx's own overhead would cap the figure well below the server's.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
    finally:
        writer.close()


async def over_http(count: int) -> float:
    """Client-credentials tokens/s from `mercato run` (one uvicorn worker) over loopback HTTP,
    16 keep-alive connections driven from this process (on the other core)."""
    with tempfile.TemporaryDirectory() as tmp:
        running = start_platform(
            Path(tmp) / "data",
            extra_env={"MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD, "MERCATO_LOG_LEVEL": "WARNING"},
        )
        port = int(running.base_url.rsplit(":", 1)[1])
        try:
            async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as client:
                for _ in range(
                    50
                ):  # identity applies the admin's user.created a moment after start
                    login = await client.post(
                        "/api/v1/auth/login",
                        json={"username_or_email": "admin", "password": ADMIN_PASSWORD},
                    )
                    if login.status_code == 200:
                        break
                    await asyncio.sleep(0.2)
                made = await client.post(
                    "/api/v1/admin/clients",
                    headers={"Authorization": f"Bearer {login.json()['access_token']}"},
                    json={"client_id": "bench", "name": "bench", "scopes": ["catalog.read"]},
                )
            credentials = base64.b64encode(f"bench:{made.json()['client_secret']}".encode())
            body = b"grant_type=client_credentials"
            request = (
                b"POST /oauth/token HTTP/1.1\r\nHost: bench\r\nAuthorization: Basic "
                + credentials
                + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            per_connection = max(1, count // 16)
            await keep_alive_requests(port, 50, request)  # warm-up
            started = time.perf_counter()
            await asyncio.gather(
                *(keep_alive_requests(port, per_connection, request) for _ in range(16))
            )
            return per_connection * 16 / (time.perf_counter() - started)
        finally:
            stop_platform(running)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--flood", type=int, default=200)
    args = parser.parse_args()
    configure_logging("WARNING", json=True)  # a login storm logs a line per login
    with tempfile.TemporaryDirectory() as tmp:
        settings = embedded_settings(Path(tmp))
        async with stack(settings, ["accounts", "identity"]) as s:
            app_rate, bare_rate = await token_rates(s, args.tokens)
            first_us, repeated_us = await verification_costs(s, 2000)
            logins, p99_ms, probes = await login_storm(s, args.logins)
            quiet_ms, flood_ms, flood_answers = await login_during_flood(s, args.flood)
    http_rate = await over_http(args.tokens)
    params = _hasher
    print("bench/identity.py on this machine (embedded, SQLite, in-process ASGI)")
    print(f"{'figure':<46}{'mercato':>14}   {'baseline / aim':<40}")
    print(
        f"{'client-credentials tokens/s (16 in flight)':<46}{app_rate:>14,.0f}   "
        f"bare ES256 signing {bare_rate:,.0f}/s; ratio {app_rate / bare_rate:.0%} "
        "(aim >= 1,500/s, >= 25 %)"
    )
    print(
        f"{'  same, mercato run over loopback HTTP':<46}{http_rate:>14,.0f}   "
        f"ratio {http_rate / bare_rate:.0%} of bare signing"
    )
    print(f"{'verification, first time (us/token)':<46}{first_us:>14.1f}   signature + claims")
    print(f"{'verification, repeated (us/token)':<46}{repeated_us:>14.1f}   aim <= 10 us")
    print(
        f"{'logins/s (8 in flight)':<46}{logins:>14.1f}   argon2id m={params.memory_cost} KiB "
        f"t={params.time_cost} p={params.parallelism}"
    )
    print(
        f"{'/health p99 during the login storm (ms)':<46}{p99_ms:>14.1f}   "
        f"aim <= 20 ms ({probes} probes)"
    )
    print(
        f"{f'login p99 during {args.flood} registrations (ms)':<46}{flood_ms:>14.1f}   "
        f"without the flood {quiet_ms:.1f} ms; aim <= 1,000 ms (flood answered {flood_answers})"
    )


if __name__ == "__main__":
    asyncio.run(main())
