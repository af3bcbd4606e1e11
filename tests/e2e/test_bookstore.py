"""Seed 002's walkthrough against `mercato run`, as a user does it: real logins, real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningPlatform, login, start_platform, stop_platform, until

ADMIN_PASSWORD = "Admin-Pass-1234"
PASSWORD = "Correct-Horse-9"


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[RunningPlatform]:
    running = start_platform(
        tmp_path / "data", extra_env={"MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD}
    )
    yield running
    stop_platform(running)


def newcomer(client: httpx.Client, username: str, top_up: str) -> dict[str, str]:
    form = {
        "username": username,
        "email": f"{username}@example.com",
        "password": PASSWORD,
        "confirm_password": PASSWORD,
    }
    assert client.post("/api/v1/accounts/register", json=form).status_code == 201
    headers = login(client, username, PASSWORD)
    topped = client.post("/api/v1/wallet/topup", headers=headers, json={"amount": top_up})
    assert topped.status_code == 200, topped.text
    return headers


def order(client: httpx.Client, headers: dict[str, str], product_id: str) -> dict[str, Any]:
    """Place an order (once orders' replica knows the product) and wait until it settles."""

    def place() -> dict[str, Any] | None:
        answer = client.post(
            "/api/v1/orders",
            headers=headers,
            json={"items": [{"product_id": product_id, "quantity": 1}]},
        )
        return answer.json() if answer.status_code == 202 else None

    placed = until(place, "placement")

    def settled() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/api/v1/orders/{placed['id']}", headers=headers).json()
        done = body["status"] == "completed" or (
            body["status"] == "failed"
            and body["payment_status"] not in ("pending", "debited")
            and body["inventory_status"] not in ("pending", "reserved")
        )
        return body if done else None

    result: dict[str, Any] = until(settled, f"order {placed['id']} settled")
    return result


def test_bookstore_walkthrough_over_http(shop: RunningPlatform) -> None:
    with shop.client() as client:
        boss = login(client, "admin", ADMIN_PASSWORD)
        created = client.post(
            "/api/v1/products",
            headers=boss,
            json={"name": "Book store microservice architecture", "price": 20, "stock": 1},
        )
        assert created.status_code == 201, created.text
        book = created.json()["id"]

        jane = newcomer(client, "jane", "1500")
        done = order(client, jane, book)
        assert done["status"] == "completed"
        assert done["is_payment_processed"] and done["is_inventory_processed"]
        balance = client.get("/api/v1/wallet/balance", headers=jane).json()["balance"]
        assert Decimal(balance) == Decimal("1480")
        assert client.get(f"/api/v1/products/{book}").json()["stock"] == 0

        john = newcomer(client, "john", "100")
        late = order(client, john, book)
        assert (late["status"], late["fail_reason"]) == ("failed", "out_of_stock")
        assert client.get("/api/v1/wallet/balance", headers=john).json()["balance"] == "100.00"

        atlas = client.post(
            "/api/v1/products", headers=boss, json={"name": "Atlas", "price": 5000, "stock": 3}
        ).json()["id"]
        broke = order(client, jane, atlas)
        assert (broke["status"], broke["fail_reason"]) == ("failed", "insufficient_funds")
        assert client.get(f"/api/v1/products/{atlas}").json()["stock"] == 3
        orders = client.get("/api/v1/admin/orders", headers=boss).json()
        assert orders["total"] == 3
