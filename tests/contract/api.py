"""A client of the public HTTP contract, shared by the black-box suite (sync httpx: one request
at a time reads like the walkthroughs the seeds' READMEs describe)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import httpx

ADMIN_PASSWORD = "Admin-Pass-1234"
PASSWORD = "Correct-Horse-9"
FINAL = ("completed", "failed")
T = TypeVar("T")


def until(check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """Poll `check` until it answers something truthy (events take a moment on both targets)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout} s")
        time.sleep(0.1)


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for an access token."""
    return {"Authorization": f"Bearer {token}"}


def unique(prefix: str) -> str:
    """A name no other test of the session uses (the targets live for the whole session)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def login_tokens(client: httpx.Client, username: str, password: str = PASSWORD) -> dict[str, Any]:
    """Log in, retried until identity has applied the user's `user.created`."""

    def attempt() -> dict[str, Any] | None:
        answer = client.post(
            "/api/v1/auth/login", json={"username_or_email": username, "password": password}
        )
        return answer.json() if answer.status_code == 200 else None

    return until(attempt, f"login as {username}")


def login(client: httpx.Client, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Log in; the bearer header."""
    return bearer(login_tokens(client, username, password)["access_token"])


def admin(client: httpx.Client) -> dict[str, str]:
    """The bootstrap admin's bearer header."""
    return login(client, "admin", ADMIN_PASSWORD)


def register(client: httpx.Client, prefix: str = "user") -> tuple[str, dict[str, Any]]:
    """A new person: (username, profile)."""
    username = unique(prefix)
    answer = client.post(
        "/api/v1/accounts/register",
        json={
            "username": username,
            "email": f"{username}@example.com",
            "password": PASSWORD,
            "confirm_password": PASSWORD,
        },
    )
    assert answer.status_code == 201, answer.text
    return username, answer.json()


def newcomer(
    client: httpx.Client, prefix: str = "user", top_up: str | None = None
) -> dict[str, str]:
    """Register, log in and (optionally) top up; the bearer header."""
    username, _ = register(client, prefix)
    headers = login(client, username)
    if top_up is not None:
        topped = client.post("/api/v1/wallet/topup", headers=headers, json={"amount": top_up})
        assert topped.status_code == 200, topped.text
    return headers


def machine_client(
    client: httpx.Client, boss: dict[str, str], scopes: list[str], **extra: Any
) -> tuple[str, str]:
    """A new machine client: (client_id, client_secret)."""
    made = client.post(
        "/api/v1/admin/clients",
        headers=boss,
        json={"client_id": unique("bot"), "name": "contract bot", "scopes": scopes, **extra},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    return str(body["client_id"]), str(body["client_secret"])


def client_token(
    client: httpx.Client, client_id: str, secret: str, scope: str | None = None
) -> httpx.Response:
    """`POST /oauth/token` with client_credentials (client_secret_basic)."""
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    return client.post("/oauth/token", data=form, auth=(client_id, secret))


def product(client: httpx.Client, boss: dict[str, str], **fields: Any) -> dict[str, Any]:
    """A new product."""
    body = {"name": unique("Book"), "price": "20.00", "stock": 5, **fields}
    made = client.post("/api/v1/products", headers=boss, json=body)
    assert made.status_code == 201, made.text
    result: dict[str, Any] = made.json()
    return result


def place(
    client: httpx.Client, headers: dict[str, str], product_id: str, quantity: int = 1
) -> dict[str, Any]:
    """Place an order, once orders' replica of the catalog knows the product."""

    def attempt() -> dict[str, Any] | None:
        answer = client.post(
            "/api/v1/orders",
            headers=headers,
            json={"items": [{"product_id": product_id, "quantity": quantity}]},
        )
        return answer.json() if answer.status_code == 202 else None

    return until(attempt, f"placement of {product_id}")


def settled(client: httpx.Client, headers: dict[str, str], order_id: str) -> dict[str, Any]:
    """Wait until the order is final and, if it failed, its compensations are done."""

    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/api/v1/orders/{order_id}", headers=headers).json()
        final = body["status"] == "completed" or (
            body["status"] == "failed"
            and body["payment_status"] not in ("pending", "debited")
            and body["inventory_status"] not in ("pending", "reserved")
        )
        return body if final else None

    return until(done, f"order {order_id} settled")


def balance(client: httpx.Client, headers: dict[str, str]) -> Decimal:
    """The caller's wallet balance."""
    answer = client.get("/api/v1/wallet/balance", headers=headers)
    assert answer.status_code == 200, answer.text
    return Decimal(answer.json()["balance"])


def is_problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    """Assert a problem+json answer with that status; its body."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.headers
    body: dict[str, Any] = answer.json()
    assert body["status"] == status and body.get("title"), body
    return body
