"""Bad input to catalog, wallet and orders: a clear 422 problem+json, never a 500, no change."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.commerce import create_product
from tests.harness import Caller, Stack, admin, embedded_settings, register_user, stack


@pytest.fixture
async def shop(data_dir: Any) -> AsyncIterator[tuple[Stack, Caller, Caller, str]]:
    async with stack(embedded_settings(data_dir)) as s:
        boss = await admin(s)
        jane = await register_user(s, "jane")
        book = await create_product(s, boss, stock=5)
        yield s, boss, jane, book["id"]


def line(product_id: Any, quantity: Any = 1) -> dict[str, Any]:
    return {"product_id": product_id, "quantity": quantity}


BOOK = "BOOK"  # replaced by the real id


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"items": [line(BOOK, 0)]}, "quantity"),
        ({"items": [line(BOOK, -1)]}, "quantity"),
        ({"items": [line(BOOK, 10**30)]}, "quantity"),
        ({"items": [line(BOOK, 1.5)]}, "quantity"),
        ({"items": [line(BOOK, "2")]}, "quantity"),
        ({"items": [line(BOOK, True)]}, "quantity"),
        ({"items": []}, "items"),
        ({"items": [line(BOOK)] * 10_001}, "items"),
        ({"items": [line("not-a-uuid")]}, "product_id"),
        ({"items": [line(str(uuid.uuid4()))]}, "product_id"),  # unknown product
        ({"items": "everything"}, "items"),
        ({"items": [line(BOOK)], "total": "0.01"}, "total"),
        ({}, "items"),
        ([], "body"),
    ],
)
async def test_bad_orders_are_422(
    shop: tuple[Stack, Caller, Caller, str], body: Any, where: str
) -> None:
    s, _, jane, book = shop

    def fill(value: Any) -> Any:
        if value == BOOK:
            return book
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    answer = await s.client.post("/api/v1/orders", headers=jane.headers, json=fill(body))
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 422 and problem["detail"]
    assert any(where in [str(p) for p in e["loc"]] for e in problem["errors"]), problem["errors"]
    mine = await s.client.get("/api/v1/orders", headers=jane.headers)
    assert mine.json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "X", "price": "1.999"}, "price"),
        ({"name": "X", "price": -1}, "price"),
        ({"name": "X", "price": "1e400"}, "price"),
        ({"name": "X", "price": "-1e-400"}, "price"),
        ({"name": "X", "price": "10000000000"}, "price"),
        ({"name": "X", "price": "NaN"}, "price"),
        ({"name": "X", "price": [1]}, "price"),
        ({"name": "", "price": 1}, "name"),
        ({"name": "X" * 201, "price": 1}, "name"),
        ({"name": "X", "price": 1, "stock": -1}, "stock"),
        ({"name": "X", "price": 1, "stock": 2**63}, "stock"),
        ({"name": "X", "price": 1, "owner_id": "me"}, "owner_id"),
        ({"name": "X", "price": 1, "active": "yes"}, "active"),
        ({"name": "X", "price": 1, "source": "partner"}, "source"),
        ({"price": 1}, "name"),
    ],
)
async def test_bad_products_are_422(
    shop: tuple[Stack, Caller, Caller, str], body: dict[str, Any], field: str
) -> None:
    s, boss, _, book = shop
    answer = await s.client.post("/api/v1/products", headers=boss.headers, json=body)
    assert answer.status_code == 422, answer.text
    assert field in [str(e["loc"][-1]) for e in answer.json()["errors"]] or field in str(
        answer.json()["errors"]
    )
    patch = {k: v for k, v in body.items() if k == field}
    if patch:
        answer = await s.client.patch(f"/api/v1/products/{book}", headers=boss.headers, json=patch)
        assert answer.status_code == 422, answer.text


async def test_bad_ids_patches_and_top_ups_are_4xx(shop: tuple[Stack, Caller, Caller, str]) -> None:
    s, boss, jane, book = shop
    assert (await s.client.get("/api/v1/products/42")).status_code == 422
    assert (await s.client.get(f"/api/v1/products/{uuid.uuid4()}")).status_code == 404
    assert (
        await s.client.get(f"/api/v1/orders/{uuid.uuid4()}", headers=jane.headers)
    ).status_code == 404
    nulled = await s.client.patch(
        f"/api/v1/products/{book}", headers=boss.headers, json={"price": None}
    )
    assert nulled.status_code == 422
    for amount in ("0", "-5", "1.001", "abc", None, True, "1e400"):
        answer = await s.client.post(
            "/api/v1/wallet/topup", headers=jane.headers, json={"amount": amount}
        )
        assert answer.status_code == 422, (amount, answer.text)
    bad_key = await s.client.post(
        "/api/v1/wallet/topup",
        headers={**jane.headers, "Idempotency-Key": "x" * 300},
        json={"amount": 1},
    )
    assert bad_key.status_code == 422
    # A JSON number too big for a float reads as infinity: still a 422.
    inf = await s.client.post(
        "/api/v1/products",
        headers={**boss.headers, "Content-Type": "application/json"},
        content=b'{"name": "X", "price": 1e400}',
    )
    assert inf.status_code == 422, inf.text
    huge = await s.client.post(
        "/api/v1/orders",
        headers=jane.headers,
        content=b'{"items": [' + b'{"product_id": "x", "quantity": 1},' * 40_000 + b"]}",
    )
    assert huge.status_code in (413, 422)
