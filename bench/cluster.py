"""The distributed rows of `bench/saga.py` and `bench/catalog.py`: the dev cluster (every service
on PostgreSQL, RabbitMQ and Redis, behind nginx) with 1 and 2 replicas per service, driven over
real HTTP through the gateway by this process. The client shares the machine's two cores with
the cluster, so the figures are a floor, not a ceiling.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import services

from mercato.devcluster import ClusterConfig, DevCluster, free_port

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
            port=free_port(),
            replicas=replicas,
            env={
                "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "MERCATO_REDIS_PREFIX": f"mercato-bench:{tag}",
                "MERCATO_LOG_LEVEL": "WARNING",
                "MERCATO_WALLET_TOPUP_LIMIT": "1000000",
            },
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
