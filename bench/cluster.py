"""What the distributed mode costs (issue 14): orders/s and client-credentials tokens/s through
the dev cluster's gateway (every service on PostgreSQL, RabbitMQ and Redis, behind nginx) with 1
and 2 replicas per service, next to `mercato run` (one process, SQLite) on the same machine,
both driven over real HTTP by this process. Every row starts a fresh installation; the targets
are interleaved round by round, and the closing table gives each row's median and spread.

Also the distributed rows of `bench/saga.py` and `bench/catalog.py` (`cluster`, `saga`,
`listing`). The client shares the machine's two cores with what it measures, so the figures
are a floor, not a ceiling. Prints; never fails on time.

Run: `python bench/cluster.py [--rounds 3] [--orders 300] [--seconds 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import services
from tests.running import Processes, mercato

from mercato.devcluster import ClusterConfig, DevCluster

ADMIN_PASSWORD = "Admin-Pass-1234"
PASSWORD = "Correct-Horse-9"


def available() -> bool:
    """Whether PostgreSQL, Redis, RabbitMQ and nginx are here."""
    return (
        services.port_open("127.0.0.1", 5432)
        and services.port_open("127.0.0.1", 6379)
        and services.port_open(services.RABBIT_HOST, 5672)
        and Path("/usr/sbin/nginx").exists()
    )


BENCH_ENV = {
    "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "MERCATO_LOG_LEVEL": "WARNING",
    "MERCATO_WALLET_TOPUP_LIMIT": "1000000",
}


@asynccontextmanager
async def embedded() -> AsyncIterator[str]:
    """A fresh `mercato run` (own data dir) on a handed-over port; yields its URL."""
    workdir = Path(tempfile.mkdtemp(prefix="mercato-bench-run-"))
    processes = Processes(workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    env.update(BENCH_ENV)
    args = mercato("run", "--data-dir", str(workdir / "data"))
    try:
        yield await asyncio.to_thread(processes.spawn, "mercato", args, env, "/ready")
    finally:
        await asyncio.to_thread(processes.close)


@asynccontextmanager
async def cluster(replicas: int) -> AsyncIterator[str]:
    """A fresh dev cluster (own database, vhost, Redis prefix); yields the gateway's URL."""
    tag = uuid.uuid4().hex[:8]
    database, vhost = f"mercato_bench_{tag}", f"mercato-bench-{tag}"
    url = await asyncio.to_thread(services.create_pg_database, database)
    broker = await asyncio.to_thread(services.create_vhost, vhost)
    made = DevCluster(
        ClusterConfig(
            workdir=Path(tempfile.mkdtemp(prefix="mercato-bench-cluster-")),
            database_url=url,
            broker_url=broker,
            port=0,
            replicas=replicas,
            env={**BENCH_ENV, "MERCATO_REDIS_PREFIX": f"mercato-bench:{tag}"},
        )
    )
    try:
        await asyncio.to_thread(made.start, 240)
        yield made.base_url
    finally:
        await asyncio.to_thread(made.stop)
        await asyncio.to_thread(services.delete_vhost, vhost)
        await asyncio.to_thread(services.drop_pg_database, database)


async def login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    for _ in range(200):
        answer = await client.post(
            "/api/v1/auth/login", json={"username_or_email": username, "password": password}
        )
        if answer.status_code == 200:
            return {"Authorization": f"Bearer {answer.json()['access_token']}"}
        await asyncio.sleep(1.0)
    raise RuntimeError(f"cannot log in as {username}")


async def buyers(client: httpx.AsyncClient, names: list[str]) -> list[dict[str, str]]:
    """Register everyone, then log each in and top up.

    Registering first matters: a login that fails because identity has not applied the
    `user.created` yet counts toward the per-address login throttle, and every client of this
    bench shares one address.
    """
    for name in names:
        made = await client.post(
            "/api/v1/accounts/register",
            json={"username": name, "email": f"{name}@example.com", "password": PASSWORD,
                  "confirm_password": PASSWORD},
        )  # fmt: skip
        if made.status_code != 201:
            raise RuntimeError(f"registration refused: {made.text}")
    await asyncio.sleep(2.0)
    people = []
    for name in names:
        headers = await login(client, name, PASSWORD)
        for _ in range(200):
            topped = await client.post(
                "/api/v1/wallet/topup", headers=headers, json={"amount": "100000"}
            )
            if topped.status_code == 200:
                break
            await asyncio.sleep(0.1)
        people.append(headers)
    return people


async def product(client: httpx.AsyncClient, boss: dict[str, str]) -> str:
    made = await client.post(
        "/api/v1/products", headers=boss, json={"name": "Bench", "price": "1.00", "stock": 10**8}
    )
    return str(made.json()["id"])


async def saga(
    base_url: str, n_orders: int, concurrency: int, seconds: float, users: int = 16
) -> dict[str, float]:
    """Orders/s placed through the gateway until every one settled, then latency at half load."""
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        boss = await login(client, "admin", ADMIN_PASSWORD)
        item = await product(client, boss)
        people = await buyers(client, [f"buyer{i}" for i in range(users)])
        body = {"items": [{"product_id": item, "quantity": 1}]}

        async def place(headers: dict[str, str]) -> str:
            for _ in range(600):
                answer = await client.post("/api/v1/orders", headers=headers, json=body)
                if answer.status_code == 202:
                    return str(answer.json()["id"])
                await asyncio.sleep(0.05)  # the product not yet in orders' replica
            raise RuntimeError("placement refused")

        await asyncio.gather(*(place(p) for p in people))  # warm-up, replica known
        placed: list[tuple[dict[str, str], str]] = []
        queue = iter(range(n_orders))

        async def client_loop(index: int) -> None:
            for _ in queue:
                who = people[index % users]
                placed.append((who, await place(who)))

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(i) for i in range(concurrency)))
        await settle_all(client, placed)
        rate = n_orders / (time.perf_counter() - started)

        half: list[tuple[dict[str, str], str]] = []
        interval = 2.0 / rate
        tasks = []
        for i in range(max(1, int(rate / 2 * seconds))):
            who = people[i % users]
            tasks.append(asyncio.create_task(place(who)))
            await asyncio.sleep(interval)
        for i, task in enumerate(tasks):
            half.append((people[i % users], await task))
        latencies = await settle_all(client, half)
    latencies.sort()
    return {
        "rate": rate,
        "half_rate": rate / 2,
        "p50_half": statistics.median(latencies) * 1000,
        "p99_half": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
    }


async def settle_all(
    client: httpx.AsyncClient, placed: list[tuple[dict[str, str], str]]
) -> list[float]:
    """Wait until every order is final; the completed ones' placement -> completion seconds."""
    latencies: list[float] = []
    for headers, order_id in placed:
        for _ in range(6000):
            order: dict[str, Any] = (
                await client.get(f"/api/v1/orders/{order_id}", headers=headers)
            ).json()
            if order.get("status") in ("completed", "failed"):
                break
            await asyncio.sleep(0.05)
        if order.get("status") == "completed":
            created = datetime.fromisoformat(order["created_at"])
            updated = datetime.fromisoformat(order["updated_at"])
            latencies.append((updated - created).total_seconds())
    return latencies


async def listing(base_url: str, seconds: float, concurrency: int, products: int) -> float:
    """Authenticated `GET /api/v1/products?limit=50` requests/s through the gateway."""
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        boss = await login(client, "admin", ADMIN_PASSWORD)
        for start in range(0, products, 50):
            await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/products",
                        headers=boss,
                        json={"name": f"P{i}", "price": "9.99", "stock": 5},
                    )
                    for i in range(start, min(products, start + 50))
                )
            )
        [reader] = await buyers(client, ["reader"])
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                answer = await client.get("/api/v1/products?limit=50", headers=reader)
                if answer.status_code == 200:
                    done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


async def tokens(base_url: str, seconds: float, concurrency: int) -> dict[str, float]:
    """`POST /oauth/token` (client_credentials, a client without a budget) per second for
    `seconds` from `concurrency` connections, and the p99 of one request."""
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        boss = await login(client, "admin", ADMIN_PASSWORD)
        made = await client.post(
            "/api/v1/admin/clients",
            headers=boss,
            json={"client_id": "bench-bot", "name": "bench", "scopes": ["catalog.read"]},
        )
        made.raise_for_status()
        auth = (made.json()["client_id"], made.json()["client_secret"])
        form = {"grant_type": "client_credentials"}
        for _ in range(concurrency):  # warm-up: connections open, caches filled
            (await client.post("/oauth/token", data=form, auth=auth)).raise_for_status()
        latencies: list[float] = []
        refused = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal refused
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                answer = await client.post("/oauth/token", data=form, auth=auth)
                if answer.status_code == 200:
                    latencies.append(time.perf_counter() - began)
                else:
                    refused += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rate": len(latencies) / elapsed,
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
        "refused": float(refused),
    }


Target = Callable[[], AbstractAsyncContextManager[str]]
TARGETS: list[tuple[str, Target]] = [
    ("mercato run (1 process, SQLite)", embedded),
    ("dev cluster, 1 replica each", lambda: cluster(1)),
    ("dev cluster, 2 replicas each", lambda: cluster(2)),
]


async def fresh(
    start: Target, measure: Callable[[str], Awaitable[dict[str, float]]]
) -> dict[str, float]:
    """Start a fresh installation, measure one row on it, stop it."""
    async with start() as url:
        return await measure(url)


def spread(values: list[float]) -> str:
    """`median (min-max)` of one row's rounds."""
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="half-load and token windows")
    args = parser.parse_args()
    if not available():
        print("bench/cluster.py: needs PostgreSQL, Redis, RabbitMQ and nginx; nothing measured")
        return
    orders: dict[str, list[dict[str, float]]] = {name: [] for name, _ in TARGETS}
    issued: dict[str, list[dict[str, float]]] = {name: [] for name, _ in TARGETS}
    for round_number in range(args.rounds):
        # Interleaved, and each round starts at another target, so a slow minute of the
        # machine does not land on one row only.
        shift = round_number % len(TARGETS)
        for name, start in TARGETS[shift:] + TARGETS[:shift]:
            orders[name].append(
                await fresh(
                    start, lambda url: saga(url, args.orders, args.concurrency, args.seconds)
                )
            )
            issued[name].append(
                await fresh(start, lambda url: tokens(url, args.seconds, args.concurrency))
            )
            last_o, last_t = orders[name][-1], issued[name][-1]
            print(
                f"round {round_number + 1} {name:<34} {last_o['rate']:>7.0f} orders/s "
                f"(p99 {last_o['p99_half']:.0f} ms at half load)  {last_t['rate']:>7.0f} tokens/s "
                f"(p99 {last_t['p99']:.0f} ms)",
                flush=True,
            )
    print(
        f"\nbench/cluster.py: {args.orders} one-line orders by {args.concurrency} clients, then "
        f"{args.seconds:g} s at half load; client-credentials tokens for {args.seconds:g} s from "
        f"{args.concurrency} connections; real HTTP from this process; medians of "
        f"{args.rounds} interleaved rounds (min-max), each row on a fresh installation"
    )
    print(
        f"{'target':<34}{'orders/s':>22}{'p99 ms, half load':>24}"
        f"{'tokens/s':>24}{'token p99 ms':>22}"
    )
    for name, _ in TARGETS:
        print(
            f"{name:<34}{spread([r['rate'] for r in orders[name]]):>22}"
            f"{spread([r['p99_half'] for r in orders[name]]):>24}"
            f"{spread([r['rate'] for r in issued[name]]):>24}"
            f"{spread([r['p99'] for r in issued[name]]):>22}"
        )
    print("baseline: the first row, `mercato run` on the same machine and client")


if __name__ == "__main__":
    asyncio.run(main())
