"""The seeds' walkthroughs over HTTP, on both targets: seed 004's registration flow (register,
log in, change the password, delete the account, each reaching identity by an event) and seed
002's bookstore (a book bought, a second buyer out of stock, a buyer short of funds, nothing
taken on failure), then twenty concurrent buyers for five copies."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx

from tests.contract.api import (
    PASSWORD,
    admin,
    balance,
    bearer,
    is_problem,
    login,
    place,
    product,
    register,
    settled,
    unique,
    until,
)
from tests.contract.conftest import Target

NEW_PASSWORD = "Brand-New-Pass-7"


def login_answer(client: httpx.Client, username: str, password: str) -> httpx.Response:
    """One login attempt, not retried."""
    return client.post(
        "/api/v1/auth/login", json={"username_or_email": username, "password": password}
    )


def person(client: httpx.Client, prefix: str, top_up: str) -> tuple[str, dict[str, str]]:
    """Register, log in and top up a new person; (user id, bearer header)."""
    username, profile = register(client, prefix)
    headers = login(client, username)
    topped = client.post("/api/v1/wallet/topup", headers=headers, json={"amount": top_up})
    assert topped.status_code == 200, topped.text
    assert topped.json() == {"user_id": profile["id"], "balance": f"{Decimal(top_up):.2f}"}
    return str(profile["id"]), headers


def stock(client: httpx.Client, product_id: str) -> int:
    """The product's stock as catalog answers it to anyone."""
    answer = client.get(f"/api/v1/products/{product_id}")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["stock"])


def not_yet_applied(answer: httpx.Response) -> bool:
    """Identity's answer while it has cut a changed account's tokens off but not yet applied
    the change itself: 503 with `Retry-After`, to be tried again."""
    return answer.status_code == 503 and "retry-after" in answer.headers


def login_once_applied(client: httpx.Client, username: str, password: str) -> dict[str, str]:
    """Log in with a password identity learns of by `user.updated`, tried every half second:
    each refusal counts towards the account's lock-out, so the tries are spaced out."""

    def attempt() -> dict[str, str] | None:
        answer = login_answer(client, username, password)
        if answer.status_code == 200:
            return bearer(answer.json()["access_token"])
        if not not_yet_applied(answer):
            assert answer.status_code == 401, (answer.status_code, answer.text)
        time.sleep(0.5)
        return None

    return until(attempt, f"{username}'s new password accepted")


def refused_login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    """The first login answer that is neither a success nor "not yet" (identity learns of a
    change by an event)."""

    def attempt() -> httpx.Response | None:
        answer = login_answer(client, username, password)
        return None if answer.status_code == 200 or not_yet_applied(answer) else answer

    return until(attempt, f"{username}'s login refused")


def reaches(client: httpx.Client, headers: dict[str, str], amount: Decimal, what: str) -> None:
    """Wait until the wallet holds `amount` (a refund follows the order's failure)."""
    until(lambda: balance(client, headers) == amount, f"{what}: {amount}")


def buy(client: httpx.Client, headers: dict[str, str], product_id: str) -> dict[str, Any]:
    """Place an order of one copy and wait until it has settled."""
    return settled(client, headers, place(client, headers, product_id)["id"])


def test_seed_004_registration_flow(target: Target) -> None:
    with target.client() as client:
        username, profile = register(client, "ada")
        assert profile["username"] == username and profile["roles"] == ["user"], profile
        assert "password" not in str(profile).lower(), profile
        headers = login(client, f"{username}@example.com")  # by email too
        me = client.get("/api/v1/accounts/me", headers=headers)
        assert me.status_code == 200 and me.json()["id"] == profile["id"], me.text

        wrong = client.patch(
            "/api/v1/accounts/me",
            headers=headers,
            json={"password": NEW_PASSWORD, "current_password": "Not-The-Pass-0"},
        )
        assert wrong.status_code in (400, 401, 403, 422), wrong.text
        is_problem(wrong, wrong.status_code)
        changed = client.patch(
            "/api/v1/accounts/me",
            headers=headers,
            json={"password": NEW_PASSWORD, "current_password": PASSWORD},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["id"] == profile["id"]

        # `user.updated` takes the new password to identity: the new one works a moment later,
        # and from then on the old one is refused like any wrong password.
        fresh = login_once_applied(client, username, NEW_PASSWORD)
        is_problem(login_answer(client, username, PASSWORD), 401)

        assert client.delete("/api/v1/accounts/me", headers=fresh).status_code == 204
        is_problem(refused_login(client, username, NEW_PASSWORD), 401)


def test_seed_002_bookstore_walkthrough(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        book = product(
            client,
            boss,
            name=unique("Book store microservice architecture"),
            author="Mojbaba",
            price=20,
            stock=1,
        )
        assert (book["price"], book["stock"], book["status"]) == ("20.00", 1, "available")

        jane_id, jane = person(client, "jane", "1500")
        done = buy(client, jane, book["id"])
        assert done["status"] == "completed" and done["fail_reason"] is None, done
        assert done["is_payment_processed"] and done["is_inventory_processed"], done
        assert (done["user_id"], done["total"]) == (jane_id, "20.00"), done
        assert balance(client, jane) == Decimal("1480.00")
        assert stock(client, book["id"]) == 0
        sold_out = client.get(f"/api/v1/products/{book['id']}").json()
        assert sold_out["status"] == "unavailable", sold_out

        john_id, john = person(client, "john", "100")
        late = buy(client, john, book["id"])
        assert (late["status"], late["fail_reason"]) == ("failed", "out_of_stock"), late
        reaches(client, john, Decimal("100.00"), "john's refund")
        assert stock(client, book["id"]) == 0

        atlas = product(client, boss, name=unique("Atlas"), price="5000", stock=3)
        broke = buy(client, jane, atlas["id"])
        assert (broke["status"], broke["fail_reason"]) == ("failed", "insufficient_funds"), broke
        until(lambda: stock(client, atlas["id"]) == 3, "the Atlas reservation released")
        assert balance(client, jane) == Decimal("1480.00")

        # The admin's view of the orders (seed 002's "Admin Orders"), per buyer.
        for user_id, expected in ((jane_id, {done["id"], broke["id"]}), (john_id, {late["id"]})):
            page = client.get(f"/api/v1/admin/orders?user_id={user_id}", headers=boss)
            assert page.status_code == 200, page.text
            body = page.json()
            assert body["total"] == len(expected), body
            assert {o["id"] for o in body["items"]} == expected, body
            assert all(o["user_id"] == user_id for o in body["items"]), body


def test_twenty_concurrent_buyers_for_five_copies(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        scarce = product(client, boss, name=unique("Scarce"), price="12.50", stock=5)
        buyers = [person(client, f"buyer{i}", "100")[1] for i in range(20)]
    start = threading.Barrier(len(buyers))

    def attempt(headers: dict[str, str]) -> dict[str, Any]:
        """One buyer on a client of their own, all starting together."""
        with target.client() as own:
            start.wait(timeout=60)
            return buy(own, headers, scarce["id"])

    with ThreadPoolExecutor(max_workers=len(buyers)) as pool:
        results = list(pool.map(attempt, buyers))

    assert Counter(r["status"] for r in results) == Counter({"completed": 5, "failed": 15})
    assert {r["fail_reason"] for r in results if r["status"] == "failed"} == {"out_of_stock"}
    assert len({r["id"] for r in results}) == 20
    with target.client() as client:
        assert stock(client, scarce["id"]) == 0
        for index, (headers, result) in enumerate(zip(buyers, results, strict=True)):
            expected = Decimal("87.50") if result["status"] == "completed" else Decimal("100.00")
            reaches(client, headers, expected, f"buyer{index}'s balance")
        sold = client.get(f"/api/v1/products/{scarce['id']}").json()
        assert (sold["stock"], sold["status"]) == (0, "unavailable"), sold
