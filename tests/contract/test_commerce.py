"""Catalog, wallet and orders over HTTP, the same on both targets: product CRUD and who may do
it, withdrawn products, the list filters, validation as problem+json, money as decimal strings;
top-ups (the per-top-up cap, `Idempotency-Key`, the ledger, an admin's top-up and balance of
another user); orders that are private to their owner, placed once per `Idempotency-Key`, and
refused without a debit when they name nothing that can be bought."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx

from tests.contract.api import (
    admin,
    balance,
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

PRODUCT_FIELDS = {
    "id",
    "name",
    "description",
    "author",
    "category",
    "price",
    "currency",
    "stock",
    "active",
    "status",
    "owner_id",
    "external_id",
    "source",
    "created_at",
    "updated_at",
}


# --- helpers ------------------------------------------------------------------------------


def listed(
    client: httpx.Client, params: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """A page of GET /api/v1/products (limit 500: the session's catalog keeps growing)."""
    answer = client.get("/api/v1/products", params={"limit": 500, **params}, headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert set(body) == {"items", "total", "skip", "limit"}, body
    return body


def names(page: dict[str, Any]) -> set[str]:
    """The product names of a page."""
    return {p["name"] for p in page["items"]}


def person(client: httpx.Client, prefix: str = "shopper") -> tuple[str, dict[str, str]]:
    """A new person logged in; (user id, bearer header)."""
    username, profile = register(client, prefix)
    return str(profile["id"]), login(client, username)


def top_up(
    client: httpx.Client,
    headers: dict[str, str],
    amount: str,
    user_id: str | None = None,
    key: str | None = None,
) -> httpx.Response:
    """POST /api/v1/wallet/topup, for `user_id` (admins) and under an `Idempotency-Key`."""
    body = {"amount": amount, **({"user_id": user_id} if user_id else {})}
    sent = {**headers, **({"Idempotency-Key": key} if key else {})}
    return client.post("/api/v1/wallet/topup", headers=sent, json=body)


def ledger(client: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    """The caller's ledger page."""
    answer = client.get("/api/v1/wallet/ledger", headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def order_lines(product_id: str, quantity: int = 1) -> dict[str, Any]:
    """An order body of one line."""
    return {"items": [{"product_id": product_id, "quantity": quantity}]}


def my_orders(client: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    """The caller's orders page."""
    answer = client.get("/api/v1/orders", params={"limit": 500}, headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


# --- catalog ------------------------------------------------------------------------------


def test_product_lifecycle_create_get_put_patch_delete(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        name = unique("Lifecycle")
        # Written through one replica, read through another (embedded: the same process).
        write, read = target.other_replica("catalog")
        with target.client(write) as direct:
            made = product(
                direct,
                boss,
                name=name,
                description="a first edition",
                author="Ada",
                category="books",
                price=12.5,
                stock=4,
            )
        assert set(made) == PRODUCT_FIELDS, made
        uuid.UUID(made["id"])
        assert made["name"] == name and made["description"] == "a first edition", made
        assert (made["price"], made["stock"], made["active"]) == ("12.50", 4, True), made
        assert (made["status"], made["source"], made["external_id"]) == ("available", "local", None)
        assert made["currency"] and made["owner_id"] is None, made

        with target.client(read) as other:
            got = other.get(f"/api/v1/products/{made['id']}")
        assert got.status_code == 200 and got.json() == made, got.text
        assert client.get(f"/api/v1/products/{made['id']}").json() == made

        path = f"/api/v1/products/{made['id']}"
        replaced = client.put(path, headers=boss, json={"name": f"{name} 2e", "price": "30"})
        assert replaced.status_code == 200, replaced.text
        whole = replaced.json()
        assert whole["name"] == f"{name} 2e" and whole["price"] == "30.00", whole
        # PUT is the whole new state: omitted optional fields go back to their defaults.
        assert (whole["description"], whole["author"], whole["category"]) == (None, None, None)
        assert (whole["stock"], whole["active"], whole["id"]) == (0, True, made["id"]), whole
        assert whole["status"] == "unavailable", whole

        patched = client.patch(path, headers=boss, json={"stock": 7, "author": "Grace"})
        assert patched.status_code == 200, patched.text
        part = patched.json()
        assert (part["stock"], part["author"], part["status"]) == (7, "Grace", "available"), part
        assert (part["name"], part["price"]) == (f"{name} 2e", "30.00"), part
        assert client.get(path).json() == part

        is_problem(client.patch(path, headers=boss, json={"name": None}), 422)
        assert client.get(path).json()["name"] == f"{name} 2e"

        gone = client.delete(path, headers=boss)
        assert gone.status_code == 204 and gone.content == b"", gone.text
        is_problem(client.get(path), 404)
        is_problem(client.patch(path, headers=boss, json={"stock": 1}), 404)
        is_problem(client.put(path, headers=boss, json={"name": name, "price": 1}), 404)
        is_problem(client.delete(path, headers=boss), 404)
        assert names(listed(client, {"q": name}, boss)) == set()
        assert names(listed(client, {"q": name, "include_inactive": "true"}, boss)) == set()


def test_a_withdrawn_product_leaves_the_shelf_but_admins_still_see_it(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        _, shopper = person(client)
        name = unique("Withdrawn")
        made = product(client, boss, name=name, stock=3)
        assert names(listed(client, {"q": name})) == {name}

        withdrawn = client.patch(
            f"/api/v1/products/{made['id']}", headers=boss, json={"active": False}
        )
        assert withdrawn.status_code == 200, withdrawn.text
        assert (withdrawn.json()["active"], withdrawn.json()["status"]) == (False, "unavailable")
        assert withdrawn.json()["stock"] == 3

        assert listed(client, {"q": name})["total"] == 0
        assert listed(client, {"q": name}, shopper)["total"] == 0
        assert listed(client, {"q": name}, boss)["total"] == 0
        shown = listed(client, {"q": name, "include_inactive": "true"}, boss)
        assert shown["total"] == 1 and shown["items"][0]["id"] == made["id"], shown
        assert shown["items"][0]["active"] is False, shown

        is_problem(client.get("/api/v1/products", params={"include_inactive": "true"}), 401)
        is_problem(
            client.get("/api/v1/products", params={"include_inactive": "true"}, headers=shopper),
            403,
        )
        # Withdrawn, not deleted: it is still there by its id.
        kept = client.get(f"/api/v1/products/{made['id']}")
        assert kept.status_code == 200 and kept.json()["active"] is False, kept.text

        back = client.patch(f"/api/v1/products/{made['id']}", headers=boss, json={"active": True})
        assert back.status_code == 200 and back.json()["status"] == "available", back.text
        assert names(listed(client, {"q": name})) == {name}


def test_list_filters_q_category_and_available(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        tag, shelf = unique("tag"), unique("shelf")
        stocked = product(client, boss, name=f"{tag} stocked", category=shelf, stock=2)
        empty = product(client, boss, name=f"{tag} empty", category=shelf, stock=0)
        elsewhere = product(client, boss, name=f"{tag} elsewhere", stock=1)

        assert names(listed(client, {"q": tag})) == {
            stocked["name"],
            empty["name"],
            elsewhere["name"],
        }
        assert names(listed(client, {"q": tag, "available": "true"})) == {
            stocked["name"],
            elsewhere["name"],
        }
        assert names(listed(client, {"q": tag, "available": "false"})) == {empty["name"]}
        by_shelf = listed(client, {"category": shelf})
        assert names(by_shelf) == {stocked["name"], empty["name"]}
        assert by_shelf["total"] == 2, by_shelf
        assert names(listed(client, {"category": shelf, "available": "true"})) == {stocked["name"]}
        assert listed(client, {"q": unique("nothing")})["total"] == 0

        page = listed(client, {"q": tag, "limit": 2, "skip": 0})
        assert (page["total"], page["skip"], page["limit"], len(page["items"])) == (3, 0, 2, 2)
        rest = listed(client, {"q": tag, "limit": 2, "skip": 2})
        assert len(rest["items"]) == 1 and names(rest).isdisjoint(names(page)), (page, rest)
        is_problem(client.get("/api/v1/products", params={"limit": 501}), 422)


def test_only_admins_write_the_catalog(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        _, shopper = person(client)
        made = product(client, boss, name=unique("Guarded"), price="9.99", stock=1)
        path = f"/api/v1/products/{made['id']}"
        new = {"name": unique("Intruder"), "price": "1.00", "stock": 1}
        for headers, status in (({}, 401), (shopper, 403)):
            is_problem(client.post("/api/v1/products", headers=headers, json=new), status)
            is_problem(client.put(path, headers=headers, json=new), status)
            is_problem(client.patch(path, headers=headers, json={"price": "0.01"}), status)
            is_problem(client.delete(path, headers=headers), status)
        assert client.get(path).json() == made
        assert listed(client, {"q": new["name"], "include_inactive": "true"}, boss)["total"] == 0


def test_bad_product_bodies_are_422_problems(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        name = unique("Invalid")
        for body in (
            {"price": "1.00"},  # no name
            {"name": "", "price": "1.00"},
            {"name": name},  # no price
            {"name": name, "price": "-1.00"},
            {"name": name, "price": "a lot"},
            {"name": name, "price": "1.00", "stock": -1},
            {"name": name, "price": "1.00", "stock": "5"},
            {"name": name, "price": "1.00", "colour": "red"},
        ):
            problem = is_problem(client.post("/api/v1/products", headers=boss, json=body), 422)
            assert problem.get("errors"), (body, problem)
        is_problem(
            client.post(
                "/api/v1/products",
                headers={**boss, "Content-Type": "application/json"},
                content=b"{not json",
            ),
            422,
        )
        assert listed(client, {"q": name, "include_inactive": "true"}, boss)["total"] == 0


def test_money_is_a_decimal_string_with_two_places(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        tag = unique("Money")
        for sent, shown in ((19.99, "19.99"), ("19.9", "19.90"), (7, "7.00"), ("0", "0.00")):
            made = product(client, boss, name=f"{tag} {sent}", price=sent)
            assert made["price"] == shown, (sent, made)
            assert client.get(f"/api/v1/products/{made['id']}").json()["price"] == shown
        prices = {p["price"] for p in listed(client, {"q": tag})["items"]}
        assert prices == {"19.99", "19.90", "7.00", "0.00"}, prices
        _, shopper = person(client)
        topped = top_up(client, shopper, "12.5")
        assert topped.status_code == 200 and topped.json()["balance"] == "12.50", topped.text
        assert balance(client, shopper) == Decimal("12.50")
        answer = client.get("/api/v1/wallet/balance", headers=shopper).json()
        assert answer["balance"] == "12.50", answer


# --- wallet -------------------------------------------------------------------------------


def test_top_ups_and_the_ledger(target: Target) -> None:
    with target.client() as client:
        user_id, shopper = person(client)
        assert client.get("/api/v1/wallet/balance", headers=shopper).json()["balance"] == "0.00"
        first = top_up(client, shopper, "25.5")
        assert first.status_code == 200, first.text
        assert first.json() == {"user_id": user_id, "balance": "25.50"}
        second = top_up(client, shopper, "10")
        assert second.json() == {"user_id": user_id, "balance": "35.50"}, second.text
        assert balance(client, shopper) == Decimal("35.50")

        entries = ledger(client, shopper)
        assert entries["total"] == 2, entries
        newest, oldest = entries["items"]
        assert (newest["kind"], newest["amount"], newest["balance_after"]) == (
            "topup",
            "10.00",
            "35.50",
        ), newest
        assert (oldest["kind"], oldest["amount"], oldest["balance_after"]) == (
            "topup",
            "25.50",
            "25.50",
        ), oldest
        assert newest["order_id"] is None and newest["id"] != oldest["id"]

        is_problem(client.get("/api/v1/wallet/balance"), 401)
        is_problem(client.get("/api/v1/wallet/ledger"), 401)
        is_problem(client.post("/api/v1/wallet/topup", json={"amount": "5"}), 401)


def test_a_user_top_up_is_capped_and_must_be_positive(target: Target) -> None:
    with target.client() as client:
        _, shopper = person(client)
        for amount in ("10000.01", "50000", "0", "-5", "ten"):
            problem = is_problem(top_up(client, shopper, amount), 422)
            assert problem.get("errors"), (amount, problem)
        assert balance(client, shopper) == Decimal("0")
        assert ledger(client, shopper)["total"] == 0
        at_cap = top_up(client, shopper, "10000")
        assert at_cap.status_code == 200 and at_cap.json()["balance"] == "10000.00", at_cap.text


def test_a_top_up_replayed_with_its_idempotency_key_credits_once(target: Target) -> None:
    with target.client() as client:
        user_id, shopper = person(client)
        key = uuid.uuid4().hex
        first = top_up(client, shopper, "40", key=key)
        again = top_up(client, shopper, "40", key=key)
        assert first.status_code == again.status_code == 200, (first.text, again.text)
        assert first.json() == again.json() == {"user_id": user_id, "balance": "40.00"}
        assert balance(client, shopper) == Decimal("40.00")
        assert ledger(client, shopper)["total"] == 1

        is_problem(top_up(client, shopper, "41", key=key), 409)  # the key, another request
        other = top_up(client, shopper, "40", key=uuid.uuid4().hex)
        assert other.json()["balance"] == "80.00", other.text
        assert ledger(client, shopper)["total"] == 2

        # The key is the caller's: another person's same key is another request.
        _, stranger = person(client)
        theirs = top_up(client, stranger, "40", key=key)
        assert theirs.status_code == 200 and theirs.json()["balance"] == "40.00", theirs.text
        assert balance(client, shopper) == Decimal("80.00")


def test_an_admin_tops_up_another_user_past_the_cap(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        user_id, shopper = person(client)
        other_id, other = person(client)
        assert top_up(client, shopper, "1").status_code == 200  # the wallet exists

        granted = top_up(client, boss, "20000", user_id=user_id)
        assert granted.status_code == 200, granted.text
        assert granted.json() == {"user_id": user_id, "balance": "20001.00"}
        assert balance(client, shopper) == Decimal("20001.00")
        assert ledger(client, shopper)["items"][0]["amount"] == "20000.00"

        is_problem(top_up(client, shopper, "5", user_id=other_id), 403)
        assert balance(client, other) == Decimal("0")
        assert balance(client, shopper) == Decimal("20001.00")


def test_an_admin_reads_another_users_balance(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        user_id, shopper = person(client)
        other_id, other = person(client)
        assert top_up(client, shopper, "33.30").status_code == 200
        assert top_up(client, other, "1").status_code == 200

        read = client.get("/api/v1/wallet/balance", params={"user_id": user_id}, headers=boss)
        assert read.status_code == 200, read.text
        assert read.json() == {"user_id": user_id, "balance": "33.30"}, read.json()

        # A person reads only their own: never another user's balance.
        peek = client.get("/api/v1/wallet/balance", params={"user_id": user_id}, headers=other)
        is_problem(peek, 403)
        own = client.get("/api/v1/wallet/balance", params={"user_id": other_id}, headers=other)
        assert own.json() == {"user_id": other_id, "balance": "1.00"}, own.text


# --- orders -------------------------------------------------------------------------------


def test_orders_are_their_owners_own(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        book = product(client, boss, name=unique("Private"), price="3.00", stock=5)
        owner_id, owner = person(client, "owner")
        _, stranger = person(client, "stranger")
        assert top_up(client, owner, "10").status_code == 200

        placed = place(client, owner, book["id"])
        assert (placed["status"], placed["user_id"], placed["total"]) == (
            "pending",
            owner_id,
            "3.00",
        ), placed
        assert placed["items"] == [
            {
                "product_id": book["id"],
                "name": book["name"],
                "quantity": 1,
                "unit_price": "3.00",
                "line_total": "3.00",
            }
        ], placed
        done = settled(client, owner, placed["id"])
        assert done["status"] == "completed", done

        path = f"/api/v1/orders/{placed['id']}"
        is_problem(client.get(path, headers=stranger), 404)
        is_problem(client.get(f"/api/v1/orders/{uuid.uuid4()}", headers=owner), 404)
        is_problem(client.get(path), 401)
        is_problem(client.get("/api/v1/orders"), 401)
        assert my_orders(client, stranger)["total"] == 0

        mine = my_orders(client, owner)
        assert mine["total"] == 1 and mine["items"][0]["id"] == placed["id"], mine
        done_only = client.get("/api/v1/orders", params={"status": "completed"}, headers=owner)
        assert [o["id"] for o in done_only.json()["items"]] == [placed["id"]], done_only.text
        failed_only = client.get("/api/v1/orders", params={"status": "failed"}, headers=owner)
        assert failed_only.json()["total"] == 0, failed_only.text

        everyone = client.get("/api/v1/admin/orders", params={"limit": 500}, headers=boss)
        assert everyone.status_code == 200, everyone.text
        assert placed["id"] in {o["id"] for o in everyone.json()["items"]}
        is_problem(client.get("/api/v1/admin/orders", headers=owner), 403)


def test_an_order_replayed_with_its_idempotency_key_is_placed_once(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        book = product(client, boss, name=unique("Once"), price="4.00", stock=10)
        owner_id, owner = person(client, "once")
        assert top_up(client, owner, "20").status_code == 200
        key = {"Idempotency-Key": uuid.uuid4().hex}

        def attempt() -> dict[str, Any] | None:
            answer = client.post(
                "/api/v1/orders", headers={**owner, **key}, json=order_lines(book["id"])
            )
            return answer.json() if answer.status_code == 202 else None

        first = until(attempt, "the first placement")
        again = client.post(
            "/api/v1/orders", headers={**owner, **key}, json=order_lines(book["id"])
        )
        assert again.status_code == 202, again.text
        assert again.json()["id"] == first["id"], (first, again.json())
        is_problem(
            client.post(
                "/api/v1/orders", headers={**owner, **key}, json=order_lines(book["id"], 2)
            ),
            409,
        )

        assert settled(client, owner, first["id"])["status"] == "completed"
        assert balance(client, owner) == Decimal("16.00")
        assert client.get(f"/api/v1/products/{book['id']}").json()["stock"] == 9
        theirs = client.get(
            "/api/v1/admin/orders", params={"user_id": owner_id}, headers=boss
        ).json()
        assert [o["id"] for o in theirs["items"]] == [first["id"]], theirs
        assert my_orders(client, owner)["total"] == 1


def test_an_order_of_nothing_buyable_is_refused_and_debits_nothing(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        book = product(client, boss, name=unique("Refused"), price="2.00", stock=3)
        _, buyer = person(client, "refused")
        assert top_up(client, buyer, "10").status_code == 200
        malformed: list[dict[str, Any]] = [
            order_lines(book["id"], 0),
            order_lines(book["id"], -1),
            order_lines("not-a-uuid"),
            {"items": []},
            {},
        ]
        for body in malformed:
            problem = is_problem(client.post("/api/v1/orders", headers=buyer, json=body), 422)
            assert problem.get("errors"), (body, problem)
        unknown = client.post("/api/v1/orders", headers=buyer, json=order_lines(str(uuid.uuid4())))
        assert 400 <= unknown.status_code < 500, (unknown.status_code, unknown.text)
        is_problem(unknown, unknown.status_code)
        is_problem(client.post("/api/v1/orders", json=order_lines(book["id"])), 401)

        assert my_orders(client, buyer)["total"] == 0
        assert balance(client, buyer) == Decimal("10.00")
        assert ledger(client, buyer)["total"] == 1
        assert client.get(f"/api/v1/products/{book['id']}").json()["stock"] == 3
