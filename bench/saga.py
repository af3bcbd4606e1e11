"""Orders completed per second end to end (placement -> `completed`) and that latency.

Runs the real platform in this process (`tests.harness.stack`: HTTP through the ASGI app,
events through the outbox, relays and consumers), embedded (SQLite, in-process events) and,
when PostgreSQL, RabbitMQ and Redis answer, distributed (PostgreSQL, RabbitMQ, Redis). Prints
figures next to the event backbone's baseline from `bench/events.py`; never fails on time.

    python bench/saga.py [--orders 600] [--concurrency 32] [--seconds 5]

Latency is `updated_at - created_at` of each completed order as orders recorded it (placement
committed -> completion committed), so measuring adds no polling load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster as cluster_bench
import events as events_bench
from sqlalchemy import func, select
from tests import services
from tests.commerce import create_product, top_up
from tests.harness import Caller, Stack, admin, distributed_settings, embedded_settings, stack

from mercato.orders.store import orders
from mercato.platform.logging import configure_logging
from mercato.platform.settings import Settings

USERS = 16


async def completed(s: Stack, since: Any) -> list[float]:
    """Latencies (s) of orders completed among those placed after `since`."""
    async with s.platform.databases["orders"].read() as conn:
        rows = await conn.execute(
            select(orders.c.created_at, orders.c.updated_at).where(
                orders.c.status == "completed", orders.c.created_at >= since
            )
        )
        return [(u - c).total_seconds() for c, u in rows]


async def settled_count(s: Stack, since: Any) -> int:
    async with s.platform.databases["orders"].read() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).where(
                        orders.c.status != "pending", orders.c.created_at >= since
                    )
                )
            ).scalar_one()
        )


async def place(s: Stack, who: Caller, product_id: str) -> None:
    answer = await s.client.post(
        "/api/v1/orders",
        headers=who.headers,
        json={"items": [{"product_id": product_id, "quantity": 1}]},
    )
    assert answer.status_code == 202, answer.text


async def wait_settled(s: Stack, since: Any, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while await settled_count(s, since) < count:
        if time.monotonic() > deadline:
            raise TimeoutError("orders did not settle")
        await asyncio.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(
    settings: Settings, n_orders: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    from mercato.platform.clock import utcnow

    async with stack(settings) as s:
        boss = await admin(s)
        book = await create_product(s, boss, price="1.00", stock=1_000_000)
        buyers = [await _buyer(s, f"b{i}") for i in range(USERS)]
        # Warm-up: a few orders through every path.
        warm = utcnow()
        await asyncio.gather(*(place(s, b, book["id"]) for b in buyers))
        await wait_settled(s, warm, USERS)

        # Throughput: `n_orders` placed by `concurrency` clients as fast as they can.
        start = utcnow()
        queue = iter(range(n_orders))

        async def client(index: int) -> None:
            for _ in queue:
                await place(s, buyers[index % USERS], book["id"])

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        await wait_settled(s, start, n_orders)
        elapsed = time.perf_counter() - began
        rate = n_orders / elapsed
        flat = await completed(s, start)

        # Latency at half that load: open loop, placements spaced evenly.
        half = utcnow()
        target = rate / 2
        count = max(1, int(target * seconds))
        tasks = []
        t0 = time.perf_counter()
        for i in range(count):
            delay = t0 + i / target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(place(s, buyers[i % USERS], book["id"])))
        await asyncio.gather(*tasks)
        await wait_settled(s, half, count)
        lat = await completed(s, half)
        return {
            "rate": rate,
            "p50_full": pct(flat, 0.5),
            "p99_full": pct(flat, 0.99),
            "half_rate": target,
            "p50_half": pct(lat, 0.5),
            "p99_half": pct(lat, 0.99),
            "mean_half": statistics.fmean(lat) * 1000,
        }


async def _buyer(s: Stack, name: str) -> Caller:
    from tests.harness import register_user

    who = await register_user(s, f"{name}{uuid.uuid4().hex[:6]}")
    await top_up(s, who, "10000")
    return who


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--baseline-events", type=int, default=2000)
    parser.add_argument(
        "--no-cluster", action="store_true", help="skip the dev-cluster rows (1 and 2 replicas)"
    )
    args = parser.parse_args()
    configure_logging("WARNING", json=True)
    tmp = Path(tempfile.mkdtemp(prefix="mercato-bench-saga-"))
    have_pg = services.port_open("127.0.0.1", 5432)
    have_rabbit = services.port_open(services.RABBIT_HOST, 5672)
    have_redis = services.port_open("127.0.0.1", 6379)
    rows: list[tuple[str, dict[str, Any], float]] = []

    emb_dir = tmp / "embedded"
    emb_dir.mkdir()
    # The production relay poll (the tests' 50 ms would add polling load a real setup has not).
    embedded = await run(
        embedded_settings(emb_dir, relay_poll_seconds=1.0),
        args.orders,
        args.concurrency,
        args.seconds,
    )
    base = args.baseline_events / await events_bench.through_backbone(
        f"sqlite+aiosqlite:///{tmp / 'p.db'}",
        f"sqlite+aiosqlite:///{tmp / 'c.db'}",
        "inprocess",
        args.baseline_events,
        None,
    )
    rows.append(("embedded (SQLite, in-process)", embedded, base))

    if have_pg and have_rabbit and have_redis:
        db = f"mercato_bench_{uuid.uuid4().hex[:8]}"
        pg_url = await asyncio.to_thread(services.create_pg_database, db)
        vhost = f"mercato-bench-{uuid.uuid4().hex[:8]}"
        rabbit = services.create_vhost(vhost)
        try:
            dist_dir = tmp / "distributed"
            dist_dir.mkdir()
            settings = distributed_settings(
                dist_dir, pg_url, rabbit, services.REDIS_URL, relay_poll_seconds=1.0
            )
            dist = await run(settings, args.orders, args.concurrency, args.seconds)
            base = args.baseline_events / await events_bench.through_backbone(
                pg_url, pg_url, "rabbitmq", args.baseline_events, rabbit
            )
            rows.append(("distributed (PostgreSQL, RabbitMQ)", dist, base))
        finally:
            services.delete_vhost(vhost)
            await asyncio.to_thread(services.drop_pg_database, db)
    else:
        print("note: PostgreSQL, RabbitMQ or Redis not reachable; distributed row skipped")

    cluster_rows: list[tuple[str, dict[str, float]]] = []
    if not args.no_cluster and cluster_bench.available():
        for replicas in (1, 2):
            async with cluster_bench.cluster(replicas) as gateway:
                figures = await cluster_bench.saga(
                    gateway, args.orders, args.concurrency, args.seconds
                )
            cluster_rows.append((f"dev cluster, {replicas} replica(s) each", figures))

    print(
        f"bench/saga.py: {args.orders} one-line orders by {args.concurrency} concurrent clients, "
        f"{USERS} buyers, in-process HTTP (ASGI), this machine"
    )
    print(
        f"{'backend':<36}{'orders/s':>10}{'p50 ms':>9}{'p99 ms':>9}   "
        f"{'at half load':>12}{'p50 ms':>9}{'p99 ms':>9}   {'event baseline':>16}"
    )
    for name, r, base in rows:
        print(
            f"{name:<36}{r['rate']:>10.0f}{r['p50_full']:>9.0f}{r['p99_full']:>9.0f}   "
            f"{r['half_rate']:>10.0f}/s{r['p50_half']:>9.0f}{r['p99_half']:>9.0f}   "
            f"{base:>10.0f} ev/s"
        )
    for name, r in cluster_rows:
        print(
            f"{name:<36}{r['rate']:>10.0f}{'':>9}{'':>9}   "
            f"{r['half_rate']:>10.0f}/s{r['p50_half']:>9.0f}{r['p99_half']:>9.0f}"
        )
    if cluster_rows:
        print("dev cluster rows: real HTTP through nginx from this process (sharing the 2 cores)")
    print(
        "each order is 4 deliveries (order.placed to wallet and catalog, their two answers) "
        "plus order.completed; aims: >= 300 orders/s embedded, >= 200 distributed, "
        "p99 <= 250 ms at half load"
    )


if __name__ == "__main__":
    asyncio.run(main())
