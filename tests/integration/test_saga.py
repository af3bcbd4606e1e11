"""The order saga over HTTP on both backends: seed 002's walkthrough, contention, keys, users."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from mercato.catalog.contracts import ProductUpserted
from mercato.platform.clock import utcnow
from mercato.platform.settings import Settings
from mercato.wallet.store import ledger
from tests.commerce import balance, create_product, final, place, replica_knows, stock, top_up
from tests.harness import admin, eventually, register_user, stack


async def test_bookstore_walkthrough(backend: Settings) -> None:
    await bookstore_walkthrough(backend)


@pytest.mark.kafka
async def test_bookstore_walkthrough_on_kafka(kafka_backend: Settings) -> None:
    await bookstore_walkthrough(kafka_backend)


async def bookstore_walkthrough(settings: Settings) -> None:
    """Seed 002's walkthrough: a book bought, a second buyer out of stock, a buyer short of
    funds, and what each party sees afterwards."""
    async with stack(settings) as s:
        boss = await admin(s)
        book = await create_product(
            s, boss, name="Book store microservice architecture", author="Mojbaba", price=20
        )
        jane = await register_user(s, "jane")
        assert (await top_up(s, jane, "1500"))["balance"] == "1500.00"

        order = await place(s, jane, [(book["id"], 1)])
        assert order["status"] == "pending" and order["total"] == "20.00"
        done = await final(s, jane, order["id"])
        assert done["status"] == "completed", done
        assert done["is_payment_processed"] and done["is_inventory_processed"]
        assert done["fail_reason"] is None
        assert await balance(s, jane) == Decimal("1480.00")
        assert await stock(s, book["id"]) == 0
        shelf = await s.client.get(f"/api/v1/products/{book['id']}")
        assert shelf.json()["status"] == "unavailable"

        # A second buyer of the (now sold out) last copy fails and keeps their money.
        john = await register_user(s, "john")
        await top_up(s, john, "100")
        late = await final(s, john, (await place(s, john, [(book["id"], 1)]))["id"])
        assert late["status"] == "failed" and late["fail_reason"] == "out_of_stock"
        assert late["payment_status"] == "refunded"  # debited, then given back
        assert await balance(s, john) == Decimal("100.00")
        assert await stock(s, book["id"]) == 0

        # An order beyond the balance fails and leaves the stock alone.
        atlas = await create_product(s, boss, name="Atlas", price="5000.00", stock=3)
        broke = await final(s, jane, (await place(s, jane, [(atlas["id"], 1)]))["id"])
        assert broke["status"] == "failed" and broke["fail_reason"] == "insufficient_funds"
        assert broke["inventory_status"] == "released"
        assert await stock(s, atlas["id"]) == 3
        assert await balance(s, jane) == Decimal("1480.00")

        mine = await s.client.get("/api/v1/orders", headers=jane.headers)
        assert [o["status"] for o in mine.json()["items"]] == ["failed", "completed"]
        everyone = await s.client.get("/api/v1/admin/orders", headers=boss.headers)
        assert everyone.json()["total"] == 3
        ledger_page = await s.client.get("/api/v1/wallet/ledger", headers=john.headers)
        assert [(e["kind"], e["amount"]) for e in ledger_page.json()["items"]] == [
            ("refund", "20.00"),
            ("debit", "-20.00"),
            ("topup", "100.00"),
        ]


async def test_twenty_buyers_for_five_copies(backend: Settings) -> None:
    async with stack(backend) as s:
        boss = await admin(s)
        book = await create_product(s, boss, price="12.50", stock=5)
        buyers = [await register_user(s, f"buyer{i:02d}") for i in range(20)]
        for buyer in buyers:
            await top_up(s, buyer, "100")

        placed = await asyncio.gather(*(place(s, b, [(book["id"], 1)]) for b in buyers))
        outcomes = await asyncio.gather(
            *(final(s, b, o["id"], timeout=60) for b, o in zip(buyers, placed, strict=True))
        )
        statuses = [o["status"] for o in outcomes]
        assert statuses.count("completed") == 5, statuses
        assert statuses.count("failed") == 15
        assert {o["fail_reason"] for o in outcomes if o["status"] == "failed"} == {"out_of_stock"}
        assert await stock(s, book["id"]) == 0
        for buyer, outcome in zip(buyers, outcomes, strict=True):
            expected = Decimal("87.50") if outcome["status"] == "completed" else Decimal("100")
            assert await balance(s, buyer) == expected
        async with s.platform.databases["wallet"].read() as conn:
            debited = (
                await conn.execute(
                    select(func.sum(ledger.c.amount)).where(ledger.c.kind == "debit")
                )
            ).scalar_one()
            refunded = (
                await conn.execute(
                    select(func.sum(ledger.c.amount)).where(ledger.c.kind == "refund")
                )
            ).scalar_one()
        # Every buyer was debited; the 15 who got no copy were refunded: 5 x 12.50 stays taken.
        assert -debited - (refunded or 0) == Decimal("62.50")


async def test_idempotency_key_gives_the_same_order_and_refuses_another_body(
    backend: Settings,
) -> None:
    async with stack(backend) as s:
        boss = await admin(s)
        book = await create_product(s, boss, stock=10)
        other = await create_product(s, boss, stock=10)
        jane = await register_user(s, "jane")
        await top_up(s, jane, "100")
        key = str(uuid.uuid4())
        first = await place(s, jane, [(book["id"], 2)], key=key)
        again = await place(s, jane, [(book["id"], 2)], key=key)
        assert again["id"] == first["id"]
        clash = await s.client.post(
            "/api/v1/orders",
            headers={**jane.headers, "Idempotency-Key": key},
            json={"items": [{"product_id": other["id"], "quantity": 2}]},
        )
        assert clash.status_code == 409
        assert clash.headers["content-type"] == "application/problem+json"
        await final(s, jane, first["id"])
        assert await balance(s, jane) == Decimal("60.00")  # one debit of 2 x 20
        assert await stock(s, book["id"]) == 8
        # Keys belong to their user: john's same key is a new request of his own.
        john = await register_user(s, "john")
        await top_up(s, john, "100")
        his = await place(s, john, [(book["id"], 1)], key=key)
        assert his["id"] != first["id"]


async def test_orders_are_private_and_withdrawn_products_cannot_be_ordered(
    backend: Settings,
) -> None:
    async with stack(backend) as s:
        boss = await admin(s)
        book = await create_product(s, boss, stock=10)
        jane = await register_user(s, "jane")
        john = await register_user(s, "john")
        order = await place(s, jane, [(book["id"], 1)])
        theirs = await s.client.get(f"/api/v1/orders/{order['id']}", headers=john.headers)
        assert theirs.status_code == 404
        assert (await s.client.get("/api/v1/orders", headers=john.headers)).json()["total"] == 0
        assert (await s.client.get("/api/v1/admin/orders", headers=jane.headers)).status_code == 403
        assert (await s.client.get("/api/v1/orders")).status_code == 401
        seen = await s.client.get(f"/api/v1/orders/{order['id']}", headers=boss.headers)
        assert seen.status_code == 200

        withdrawn = await s.client.patch(
            f"/api/v1/products/{book['id']}", headers=boss.headers, json={"active": False}
        )
        assert withdrawn.status_code == 200
        await replica_knows(s, book["id"], version=2)
        refused = await s.client.post(
            "/api/v1/orders",
            headers=jane.headers,
            json={"items": [{"product_id": book["id"], "quantity": 1}]},
        )
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["loc"] == ["body", "items", 0, "product_id"]


async def test_deleting_a_user_fails_their_pending_orders_and_undoes_them(
    backend: Settings,
) -> None:
    # Without catalog the order stays pending after wallet debits it, until the user goes.
    async with stack(backend, ["accounts", "wallet", "orders"]) as s:
        jane = await register_user(s, "jane")
        await top_up(s, jane, "50")

        product_id = str(uuid.uuid4())
        async with s.platform.contexts["accounts"].uow() as uow:
            # Stand-in for catalog: the product event orders' replica learns from.
            await uow.emit(
                ProductUpserted(
                    product_id=product_id,
                    name="Book",
                    price=Decimal("20"),
                    active=True,
                    stock=5,
                    version=1,
                    occurred_at=utcnow(),
                ),
                subject=product_id,
            )

        await replica_knows(s, product_id)
        order = await place(s, jane, [(product_id, 1)])

        async def debited() -> bool:
            return await balance(s, jane) == Decimal("30.00")

        await eventually(debited, what="debit")
        assert (
            await s.client.delete("/api/v1/accounts/me", headers=jane.headers)
        ).status_code == 204
        # Her token ended with the account: an admin looks at what became of the order.
        boss = await admin(s)
        assert (await s.client.get("/api/v1/orders", headers=jane.headers)).status_code == 401

        async def undone() -> bool:
            answer = await s.client.get(f"/api/v1/orders/{order['id']}", headers=boss.headers)
            body = answer.json()
            return body["status"] == "failed" and body["payment_status"] == "refunded"

        await eventually(undone, what="order failed and refunded")
        got = await s.client.get(f"/api/v1/orders/{order['id']}", headers=boss.headers)
        assert got.json()["fail_reason"] == "user_deleted"
        refunded = await s.client.get(
            "/api/v1/wallet/balance", headers=boss.headers, params={"user_id": jane.id}
        )
        assert refunded.status_code == 200 and Decimal(refunded.json()["balance"]) == 50
