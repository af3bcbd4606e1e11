"""Helpers for catalog, wallet and orders tests: everything over HTTP, as a client would."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from mercato.orders.store import product_replica
from tests.harness import Caller, Stack, eventually

FINAL = ("completed", "failed")


async def create_product(s: Stack, boss: Caller, **fields: Any) -> dict[str, Any]:
    """An admin adds a product; waits until orders' replica knows it (eventual consistency)."""
    body = {"name": "Book", "price": "20.00", "stock": 1, **fields}
    answer = await s.client.post("/api/v1/products", headers=boss.headers, json=body)
    assert answer.status_code == 201, answer.text
    product: dict[str, Any] = answer.json()
    if "orders" in s.platform.databases:
        await replica_knows(s, product["id"])
    return product


async def replica_knows(s: Stack, product_id: str, version: int = 1) -> None:
    """Wait until orders' product replica holds `product_id` at `version` or later."""

    async def known() -> bool:
        async with s.platform.databases["orders"].read() as conn:
            found = (
                await conn.execute(
                    select(product_replica.c.version).where(
                        product_replica.c.product_id == product_id
                    )
                )
            ).scalar_one_or_none()
        return found is not None and found >= version

    await eventually(known, what=f"replica of {product_id} v{version}")


async def top_up(s: Stack, who: Caller, amount: str, **extra: Any) -> dict[str, Any]:
    """Add to the caller's wallet (or `user_id`'s, for an admin)."""
    answer = await s.client.post(
        "/api/v1/wallet/topup", headers=who.headers, json={"amount": amount, **extra}
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def balance(s: Stack, who: Caller) -> Decimal:
    """The caller's balance."""
    answer = await s.client.get("/api/v1/wallet/balance", headers=who.headers)
    assert answer.status_code == 200, answer.text
    return Decimal(answer.json()["balance"])


async def stock(s: Stack, product_id: str) -> int:
    """A product's stock."""
    answer = await s.client.get(f"/api/v1/products/{product_id}")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["stock"])


async def place(
    s: Stack, who: Caller, items: list[tuple[str, int]], key: str | None = None
) -> dict[str, Any]:
    """Place an order; 202 expected."""
    headers = {**who.headers, **({"Idempotency-Key": key} if key else {})}
    answer = await s.client.post(
        "/api/v1/orders",
        headers=headers,
        json={"items": [{"product_id": p, "quantity": q} for p, q in items]},
    )
    assert answer.status_code == 202, answer.text
    order: dict[str, Any] = answer.json()
    assert order["status"] == "pending" or key
    return order


async def final(s: Stack, who: Caller, order_id: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until the order is completed or failed, and until its compensation is done."""
    latest: dict[str, Any] = {}

    async def settled() -> bool:
        nonlocal latest
        answer = await s.client.get(f"/api/v1/orders/{order_id}", headers=who.headers)
        assert answer.status_code == 200, answer.text
        latest = answer.json()
        if latest["status"] == "completed":
            return True
        # A failed order is settled once nothing it took is still held.
        return (
            latest["status"] == "failed"
            and latest["payment_status"] != "debited"
            and latest["inventory_status"] != "reserved"
            and "pending" not in (latest["payment_status"], latest["inventory_status"])
        )

    await eventually(settled, timeout=timeout, what=f"order {order_id} settled")
    return latest
