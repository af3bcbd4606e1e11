"""The distributed mode as a team runs it (issue 6): the dev cluster, every service as two
PostgreSQL-backed replicas behind nginx, a worker, RabbitMQ and Redis, driven through the
gateway. Then faults, each ending with DESIGN §4's invariants checked: a replica SIGKILLed under
load, the worker killed mid-saga, RabbitMQ stopped for 30 s, identity stopped, Redis restarted.

Disruptive (it stops RabbitMQ and Redis), so it runs alone after the parallel pass.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from mercato.devcluster import ClusterConfig, DevCluster, free_port
from tests import services

pytestmark = [pytest.mark.disruptive, pytest.mark.timeout(900)]

ADMIN_PASSWORD = "Admin-Pass-1234"
PASSWORD = "Correct-Horse-9"
FINAL = ("completed", "failed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    services.require("PostgreSQL", "127.0.0.1", 5432)
    services.require("Redis", "127.0.0.1", 6379)
    services.require("RabbitMQ", services.RABBIT_HOST, 5672)
    if not Path("/usr/sbin/nginx").exists():
        (pytest.fail if services.IN_CI else pytest.skip)("nginx is not installed")
    tag = uuid.uuid4().hex[:8]
    database = f"mercato_cluster_{tag}"
    vhost = f"mercato-cluster-{tag}"
    database_url = services.create_pg_database(database)
    broker_url = services.create_vhost(vhost)
    made = DevCluster(
        ClusterConfig(
            workdir=tmp_path_factory.mktemp("cluster"),
            database_url=database_url,
            broker_url=broker_url,
            redis_url=services.REDIS_URL,
            port=free_port(),
            replicas=2,
            partner_port=free_port(),
            env={
                "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "MERCATO_REDIS_PREFIX": f"mercato-cluster:{tag}",
                "MERCATO_EVENT_RETRY_DELAYS": "0.2,1,2",
                # The scheduled ticks would only add noise; the tests run jobs on demand.
                "MERCATO_JOB_EXPORT_PRODUCTS_INITIAL_DELAY": "3600",
                "MERCATO_JOB_SYNC_EXTERNAL_PRODUCTS_INITIAL_DELAY": "3600",
                "MERCATO_JOB_SYNC_EXTERNAL_ORDERS_INITIAL_DELAY": "3600",
            },
        )
    )
    try:
        made.start(timeout=240)
        yield made
    finally:
        made.stop()
        services.delete_vhost(vhost)
        services.drop_pg_database(database)


# --- helpers: a client of the gateway ---------------------------------------------------------


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.2)


async def request(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    """A call through the gateway, retried while a replica or the broker is coming back.

    Retried only on connection errors and 502/503 (a replica killed or restarting); a POST
    carries an Idempotency-Key where the API honours one, so a retry never doubles an effect.
    """
    for _ in range(120):
        try:
            answer = await client.request(method, path, **kw)
        except httpx.TransportError:
            await asyncio.sleep(0.25)
            continue
        if answer.status_code not in (502, 503, 504):
            return answer
        await asyncio.sleep(0.25)
    raise AssertionError(f"{method} {path} kept failing")


async def login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    async def attempt() -> dict[str, str] | None:
        answer = await request(
            client,
            "POST",
            "/api/v1/auth/login",
            json={"username_or_email": username, "password": password},
        )
        if answer.status_code != 200:
            return None
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    headers: dict[str, str] = await until(attempt, f"login as {username}")
    return headers


async def register(client: httpx.AsyncClient, username: str) -> tuple[str, dict[str, str]]:
    answer = await request(
        client,
        "POST",
        "/api/v1/accounts/register",
        json={
            "username": username,
            "email": f"{username}@example.com",
            "password": PASSWORD,
            "confirm_password": PASSWORD,
        },
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], await login(client, username, PASSWORD)


async def top_up(client: httpx.AsyncClient, headers: dict[str, str], amount: str) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}

    async def done() -> bool:
        # The wallet is opened by `user.created`; until then a top-up may be refused.
        answer = await request(
            client,
            "POST",
            "/api/v1/wallet/topup",
            headers={**headers, **key},
            json={"amount": amount},
        )
        return answer.status_code == 200

    await until(done, "a top-up")


async def new_product(client: httpx.AsyncClient, boss: dict[str, str], **fields: Any) -> str:
    answer = await request(
        client,
        "POST",
        "/api/v1/products",
        headers=boss,
        json={"name": "Book", "price": "20.00", "stock": 1, **fields},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def place(
    client: httpx.AsyncClient, headers: dict[str, str], product_id: str, quantity: int = 1
) -> str:
    """Place an order (retried while orders' replica of the product catches up)."""
    key = {"Idempotency-Key": uuid.uuid4().hex}

    async def placed() -> str | None:
        answer = await request(
            client,
            "POST",
            "/api/v1/orders",
            headers={**headers, **key},
            json={"items": [{"product_id": product_id, "quantity": quantity}]},
        )
        if answer.status_code == 422 and "product" in answer.text:
            return None  # the product is not in orders' replica yet
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    order_id: str = await until(placed, "an order placed")
    return order_id


async def settle(
    client: httpx.AsyncClient, headers: dict[str, str], order_id: str, timeout: float = 120
) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        answer = await request(client, "GET", f"/api/v1/orders/{order_id}", headers=headers)
        body: dict[str, Any] = answer.json()
        return body if body.get("status") in FINAL else None

    order: dict[str, Any] = await until(final, f"order {order_id} settled", timeout)
    return order


async def balance(client: httpx.AsyncClient, headers: dict[str, str]) -> Decimal:
    answer = await request(client, "GET", "/api/v1/wallet/balance", headers=headers)
    return Decimal(answer.json()["balance"])


async def stock(client: httpx.AsyncClient, product_id: str) -> int:
    answer = await request(client, "GET", f"/api/v1/products/{product_id}")
    return int(answer.json()["stock"])


async def check_invariants(
    client: httpx.AsyncClient,
    buyers: list[dict[str, str]],
    orders: list[tuple[dict[str, str], str]],
    products: dict[str, int],
    prices: dict[str, Decimal],
) -> None:
    """DESIGN §4 over the API: every order settled; every wallet's balance is the sum of its
    ledger and never negative; a completed order debited exactly once, a failed one net zero;
    each product's stock = initial - completed quantities, never negative."""
    settled = [await settle(client, headers, order_id) for headers, order_id in orders]
    taken: Counter[str] = Counter()
    for order in settled:
        if order["status"] == "completed":
            for line in order["items"]:
                taken[line["product_id"]] += line["quantity"]
    for product_id, initial in products.items():
        left = await stock(client, product_id)
        assert left >= 0
        assert left == initial - taken[product_id], (product_id, initial, taken[product_id], left)
    by_order = {order["id"]: order for order in settled}
    for headers in buyers:
        ledger = (
            await request(client, "GET", "/api/v1/wallet/ledger?limit=500", headers=headers)
        ).json()["items"]
        total = sum((Decimal(entry["amount"]) for entry in ledger), Decimal("0"))
        current = await balance(client, headers)
        assert current == total and current >= 0
        per_order: dict[str, list[str]] = {}
        for entry in ledger:
            if entry["order_id"]:
                per_order.setdefault(entry["order_id"], []).append(entry["kind"])
        for order_id, kinds in per_order.items():
            order = by_order.get(order_id)
            if order is None:
                continue
            if order["status"] == "completed":
                assert kinds == ["debit"], (order_id, kinds)
            else:
                assert sorted(kinds) in ([], ["debit", "refund"]), (order_id, kinds)


# --- the walkthroughs through the gateway -------------------------------------------------


@pytest.fixture(scope="module")
def gateway(cluster: DevCluster) -> str:
    return cluster.base_url


async def test_seed_004_registration_flow_through_the_gateway(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        _, headers = await register(client, "ada")
        changed = await request(
            client,
            "PATCH",
            "/api/v1/accounts/me",
            headers=headers,
            json={"password": "Brand-New-Pass-7", "current_password": PASSWORD},
        )
        assert changed.status_code == 200, changed.text

        async def new_password_works() -> bool:
            answer = await request(
                client,
                "POST",
                "/api/v1/auth/login",
                json={"username_or_email": "ada", "password": "Brand-New-Pass-7"},
            )
            return answer.status_code == 200

        await until(new_password_works, "the new password accepted")
        old = await request(
            client,
            "POST",
            "/api/v1/auth/login",
            json={"username_or_email": "ada", "password": PASSWORD},
        )
        assert old.status_code in (401, 429)
        fresh = await login(client, "ada", "Brand-New-Pass-7")
        assert (
            await request(client, "DELETE", "/api/v1/accounts/me", headers=fresh)
        ).status_code == 204

        async def refused() -> bool:
            answer = await request(
                client,
                "POST",
                "/api/v1/auth/login",
                json={"username_or_email": "ada", "password": "Brand-New-Pass-7"},
            )
            return answer.status_code in (401, 429)

        await until(refused, "a deleted user refused")


async def test_seed_002_walkthrough_and_twenty_buyers_for_five_copies(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        boss = await login(client, "admin", ADMIN_PASSWORD)
        book = await new_product(client, boss, name="Dune", price="20.00", stock=1)
        _, reader = await register(client, "reader")
        await top_up(client, reader, "1500")
        order = await settle(client, reader, await place(client, reader, book))
        assert order["status"] == "completed"
        assert await balance(client, reader) == Decimal("1480.00")
        assert await stock(client, book) == 0
        _, late = await register(client, "late")
        await top_up(client, late, "100")
        missed = await settle(client, late, await place(client, late, book))
        assert (missed["status"], missed["fail_reason"]) == ("failed", "out_of_stock")
        assert await balance(client, late) == Decimal("100.00")
        pricey = await new_product(client, boss, name="Atlas", price="2000.00", stock=3)
        broke = await settle(client, late, await place(client, late, pricey))
        assert (broke["status"], broke["fail_reason"]) == ("failed", "insufficient_funds")
        assert await stock(client, pricey) == 3

        scarce = await new_product(client, boss, name="Scarce", price="12.50", stock=5)
        buyers = [(await register(client, f"buyer{i}"))[1] for i in range(20)]
        for headers in buyers:
            await top_up(client, headers, "100")
        placed = await asyncio.gather(*(place(client, h, scarce) for h in buyers))
        results = [await settle(client, h, o) for h, o in zip(buyers, placed, strict=True)]
        assert Counter(r["status"] for r in results) == Counter({"completed": 5, "failed": 15})
        assert await stock(client, scarce) == 0
        for headers, result in zip(buyers, results, strict=True):
            expected = Decimal("87.50") if result["status"] == "completed" else Decimal("100.00")
            assert await balance(client, headers) == expected


async def test_logout_is_refused_by_every_replica_of_every_service(cluster: DevCluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
        _, headers = await register(client, "leaver")
        assert (
            await request(client, "POST", "/api/v1/auth/logout", headers=headers)
        ).status_code == 204
    probes = {
        "accounts": "/api/v1/accounts/me",
        "identity": "/api/v1/auth/me",
        "catalog": "/api/v1/products/export",
        "wallet": "/api/v1/wallet/balance",
        "orders": "/api/v1/orders",
        "integration": "/api/v1/jobs",
    }
    for name, child in cluster.children.items():
        service = name.rsplit("-", 1)[0]
        if service not in probes:
            continue
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{child.port}", timeout=30
        ) as direct:
            answer = await direct.get(probes[service], headers=headers)
            assert answer.status_code == 401, (name, answer.status_code, answer.text)


async def test_export_and_both_syncs_against_the_partner_sandbox(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        boss = await login(client, "admin", ADMIN_PASSWORD)

        async def run(job: str) -> dict[str, Any]:
            queued = await request(client, "POST", f"/api/v1/jobs/{job}/run", headers=boss)
            assert queued.status_code == 202, queued.text
            run_id = queued.json()["run_id"]

            async def ended() -> dict[str, Any] | None:
                runs = (
                    await request(client, "GET", f"/api/v1/jobs/{job}/runs", headers=boss)
                ).json()
                found = next((r for r in runs["items"] if r["id"] == run_id), None)
                return found if found and found["status"] not in ("queued", "running") else None

            result: dict[str, Any] = await until(ended, f"{job} run")
            return result

        products = await run("sync-external-products")
        assert products["status"] == "succeeded", products
        assert products["counts"]["created"] == 30

        async def synced() -> bool:
            page = await request(client, "GET", "/api/v1/products?source=partner")
            return bool(page.json()["total"] == 30)

        await until(synced, "30 partner products in the catalog")
        again = await run("sync-external-products")
        assert (again["counts"]["created"], again["counts"]["unchanged"]) == (0, 30)
        orders = await run("sync-external-orders")
        assert orders["status"] == "succeeded", orders
        imported = await request(client, "GET", "/api/v1/external-orders", headers=boss)
        assert imported.json()["total"] == orders["counts"]["created"] > 0
        export = await run("export-products")
        assert export["status"] == "succeeded", export
        files = (await request(client, "GET", "/api/v1/exports", headers=boss)).json()["items"]
        name = files[0]["file_name"]
        download = await request(client, "GET", f"/api/v1/exports/{name}", headers=boss)
        assert download.status_code == 200
        assert download.text.count("\n") == export["counts"]["rows"] + 1  # header


# --- faults ---------------------------------------------------------------------------------


async def shop(
    client: httpx.AsyncClient, prefix: str, buyers: int, stock_each: int
) -> tuple[list[dict[str, str]], str, dict[str, int]]:
    boss = await login(client, "admin", ADMIN_PASSWORD)
    product = await new_product(client, boss, name=f"{prefix} item", price="1.00", stock=stock_each)
    people = [(await register(client, f"{prefix}{i}"))[1] for i in range(buyers)]
    for headers in people:
        await top_up(client, headers, "50")
    return people, product, {product: stock_each}


async def keep_ordering(
    client: httpx.AsyncClient, people: list[dict[str, str]], product: str, rounds: int
) -> list[tuple[dict[str, str], str]]:
    placed: list[tuple[dict[str, str], str]] = []

    async def one(headers: dict[str, str]) -> None:
        for _ in range(rounds):
            placed.append((headers, await place(client, headers, product)))

    await asyncio.gather(*(one(h) for h in people))
    return placed


async def test_a_replica_killed_under_load_loses_nothing(cluster: DevCluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
        people, product, stocks = await shop(client, "kill", 6, 20)
        ordering = asyncio.create_task(keep_ordering(client, people, product, 5))
        await asyncio.sleep(1.0)
        cluster.kill("orders-1")
        cluster.kill("wallet-2")
        placed = await ordering
        cluster.restart("orders-1")
        cluster.restart("wallet-2")
        assert len(placed) == 30
        await check_invariants(client, people, placed, stocks, {})


async def test_worker_killed_mid_saga_then_restarted(cluster: DevCluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
        people, product, stocks = await shop(client, "work", 4, 10)
        ordering = asyncio.create_task(keep_ordering(client, people, product, 4))
        await asyncio.sleep(0.5)
        cluster.kill("worker")
        placed = await ordering
        await asyncio.sleep(1.0)
        cluster.restart("worker")
        await check_invariants(client, people, placed, stocks, {})


async def test_rabbitmq_stopped_for_30_seconds_while_orders_keep_coming(
    cluster: DevCluster,
) -> None:
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
        people, product, stocks = await shop(client, "rabbit", 4, 12)
        ordering = asyncio.create_task(keep_ordering(client, people, product, 4))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(services.rabbitmqctl, "stop_app")
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.to_thread(services.rabbitmqctl, "start_app")
            await asyncio.to_thread(services.rabbitmqctl, "await_startup")
        placed = await ordering
        await check_invariants(client, people, placed, stocks, {})


async def test_identity_stopped_while_others_keep_accepting_valid_tokens(
    cluster: DevCluster,
) -> None:
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
        _, headers = await register(client, "steady")
        await top_up(client, headers, "10")
        # Every replica has fetched the JWKS once by now; identity goes away.
        cluster.kill("identity-1")
        cluster.kill("identity-2")
        try:
            for path in ("/api/v1/wallet/balance", "/api/v1/orders", "/api/v1/accounts/me"):
                for _ in range(4):  # both replicas of each, by nginx's round robin
                    answer = await client.get(path, headers=headers)
                    assert answer.status_code == 200, (path, answer.text)
            assert (await client.post("/api/v1/auth/login", json={})).status_code in (502, 503)
        finally:
            cluster.restart("identity-1")
            cluster.restart("identity-2")
            cluster.wait_healthy(120)


async def test_redis_restarted_revocations_budgets_and_orders_survive(cluster: DevCluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
        people, product, stocks = await shop(client, "redis", 3, 6)
        _, leaver = await register(client, "gone")
        assert (
            await request(client, "POST", "/api/v1/auth/logout", headers=leaver)
        ).status_code == 204
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], capture_output=True)
        await asyncio.sleep(1.0)
        subprocess.run(
            ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
             "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
             "--logfile", "/var/log/redis/ci.log"],
            check=True,
        )  # fmt: skip
        await until(
            lambda: asyncio.to_thread(services.port_open, "127.0.0.1", 6379), "redis back", 30
        )
        placed = await keep_ordering(client, people, product, 3)
        await check_invariants(client, people, placed, stocks, {})

        # Identity writes its revocations back into the shared store after Redis lost them.
        async def still_refused() -> bool:
            answers = [
                (await client.get("/api/v1/wallet/balance", headers=leaver)).status_code
                for _ in range(4)
            ]
            return all(code == 401 for code in answers)

        await until(still_refused, "the logout refused again after Redis lost it", 60)
