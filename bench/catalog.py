"""Authenticated `GET /api/v1/products?limit=50` requests/s next to a bare Starlette endpoint
running the same query on the same database (embedded: SQLite).

Both apps are driven in-process over ASGI by the same client loop, so the ratio shows what
the platform's layers cost (middleware, token verification, validation, the page's count and
serialization). Prints figures; never fails on time.

    python bench/catalog.py [--seconds 5] [--concurrency 8] [--products 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import cluster as cluster_bench
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.harness import admin, embedded_settings, stack

from mercato.catalog import service as catalog_service
from mercato.catalog.store import products
from mercato.platform.db import Database
from mercato.platform.logging import configure_logging


def bare_app(database: Database) -> Starlette:
    """The same page query and a JSON answer, with nothing else around it."""

    async def page(_: Request) -> Response:
        async with database.read() as conn:
            total = (
                await conn.execute(
                    select(func.count()).select_from(products).where(products.c.active.is_(True))
                )
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(products)
                    .where(products.c.active.is_(True))
                    .order_by(products.c.created_at, products.c.id)
                    .limit(50)
                )
            ).mappings()
            items = [{**r, "price": str(r["price"])} for r in rows]
        body = {"items": items, "total": total, "skip": 0, "limit": 50}
        return Response(json.dumps(body, default=str), media_type="application/json")

    return Starlette(routes=[Route("/products", page)])


async def hammer(
    app: object, url: str, headers: dict[str, str], seconds: float, workers: int
) -> float:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    done = 0
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        assert (await client.get(url, headers=headers)).status_code == 200
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                answer = await client.get(url, headers=headers)
                assert answer.status_code == 200
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return done / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument(
        "--no-cluster", action="store_true", help="skip the dev-cluster rows (1 and 2 replicas)"
    )
    args = parser.parse_args()
    configure_logging("WARNING", json=True)
    data = Path(tempfile.mkdtemp(prefix="mercato-bench-catalog-"))
    async with stack(embedded_settings(data), ["accounts", "identity", "catalog"]) as s:
        boss = await admin(s)
        ctx = s.platform.contexts["catalog"]
        for i in range(args.products):
            await catalog_service.create_product(
                ctx.uow, {"name": f"Book {i}", "price": "9.99", "stock": i % 5, "author": "A"}
            )
        mercato = await hammer(
            s.app, "/api/v1/products?limit=50", boss.headers, args.seconds, args.concurrency
        )
        bare = await hammer(
            bare_app(s.platform.databases["catalog"]),
            "/products",
            {},
            args.seconds,
            args.concurrency,
        )
    print(
        f"bench/catalog.py: GET 50 of {args.products} products, {args.concurrency} concurrent "
        "clients, in-process ASGI, SQLite"
    )
    print(f"{'mercato (authenticated)':<28}{mercato:>10.0f} req/s")
    print(f"{'bare Starlette, same query':<28}{bare:>10.0f} req/s")
    print(f"{'ratio':<28}{mercato / bare:>10.0%}   (aim >= 50 %)")
    if not args.no_cluster and cluster_bench.available():
        for replicas in (1, 2):
            async with cluster_bench.cluster(replicas) as gateway:
                rate = await cluster_bench.listing(
                    gateway, args.seconds, args.concurrency * 4, args.products
                )
            label = f"dev cluster, {replicas} replica(s)"
            print(f"{label:<28}{rate:>10.0f} req/s   (real HTTP through nginx, same 2 cores)")


if __name__ == "__main__":
    asyncio.run(main())
