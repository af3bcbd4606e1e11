"""Money from JSON is exact and ASCII (issue 11, item 14) in every money field, and admins read
anyone's wallet while people read only their own (item 17); on both backends."""

from __future__ import annotations

import uuid
from decimal import Decimal

from mercato.platform.settings import Settings
from tests.commerce import balance, top_up
from tests.harness import admin, machine, register_user, stack

JSON = {"content-type": "application/json"}
# Raw JSON texts: a client's float serializer would round them before they are sent.
REFUSED_AMOUNTS = [
    b"19.9999999999999999",  # a binary float reads this as 20.0
    b"0.001",
    b"1e-3",
    b'"19.9999999999999999"',
    '"\uff11\uff19.\uff19\uff19"'.encode(),  # full-width digits
    '"\u0661\u0669.\u0669\u0669"'.encode(),  # Arabic-Indic digits
    b'"1_000"',
    b'"NaN"',
    b"NaN",
    b"1e400",
]


async def test_money_from_json_is_exact_and_ascii_or_refused(backend: Settings) -> None:
    async with stack(backend, ["accounts", "wallet", "catalog"]) as s:
        boss = await admin(s)
        jane = await register_user(s, "jane")
        await top_up(s, jane, "1")
        for raw in REFUSED_AMOUNTS:
            answer = await s.client.post(
                "/api/v1/wallet/topup",
                headers={**jane.headers, **JSON},
                content=b'{"amount": ' + raw + b"}",
            )
            assert answer.status_code == 422, (raw, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["errors"][0]["loc"] == ["body", "amount"], raw
            made = await s.client.post(
                "/api/v1/products",
                headers={**boss.headers, **JSON},
                content=b'{"name": "Dune", "stock": 1, "price": ' + raw + b"}",
            )
            assert made.status_code == 422, (raw, made.text)
            assert made.json()["errors"][0]["loc"] == ["body", "price"], raw
        assert await balance(s, jane) == Decimal("1.00")  # nothing credited
        # Exact numbers with at most two places (trailing zeros are fine) are taken as written.
        exact = await s.client.post(
            "/api/v1/wallet/topup",
            headers={**jane.headers, **JSON},
            content=b'{"amount": 19.990000000000000000000}',
        )
        assert exact.status_code == 200, exact.text
        assert exact.json()["balance"] == "20.99"
        made = await s.client.post(
            "/api/v1/products",
            headers={**boss.headers, **JSON},
            content=b'{"name": "Dune", "stock": 1, "price": 9.90}',
        )
        assert made.status_code == 201 and made.json()["price"] == "9.90", made.text
        url = f"/api/v1/products/{made.json()['id']}"
        for method in ("PATCH", "PUT"):
            changed = await s.client.request(
                method,
                url,
                headers={**boss.headers, **JSON},
                content=b'{"name": "Dune", "price": 12.345}',
            )
            assert changed.status_code == 422, (method, changed.text)
        assert (await s.client.get(url)).json()["price"] == "9.90"
        malformed = await s.client.post(
            "/api/v1/wallet/topup", headers={**jane.headers, **JSON}, content=b'{"amount": 1'
        )
        assert malformed.status_code == 422


async def test_admins_read_anyones_wallet_people_only_their_own(backend: Settings) -> None:
    async with stack(backend, ["accounts", "wallet"]) as s:
        boss = await admin(s)
        jane = await register_user(s, "jane")
        john = await register_user(s, "john")
        await top_up(s, jane, "7.50")
        await top_up(s, john, "3")
        robot = await machine(s, ["mercato.admin"], "auditor")
        reader = await machine(s, ["catalog.read"], "reader")
        for path in ("/api/v1/wallet/balance", "/api/v1/wallet/ledger"):
            theirs = f"{path}?user_id={john.id}"
            assert (await s.client.get(theirs, headers=jane.headers)).status_code == 403
            assert (await s.client.get(theirs, headers=reader)).status_code == 403
            assert (await s.client.get(path, headers=robot)).status_code == 422  # whose?
            assert (
                await s.client.get(f"{path}?user_id=nope", headers=boss.headers)
            ).status_code == 422
            unknown = f"{path}?user_id={uuid.uuid4()}"
            assert (await s.client.get(unknown, headers=boss.headers)).status_code == 404
        for who in (boss.headers, robot):
            seen = await s.client.get(f"/api/v1/wallet/balance?user_id={john.id}", headers=who)
            assert seen.status_code == 200, seen.text
            assert seen.json() == {"user_id": john.id, "balance": "3.00"}
            ledger = await s.client.get(f"/api/v1/wallet/ledger?user_id={john.id}", headers=who)
            assert ledger.status_code == 200, ledger.text
            assert [e["amount"] for e in ledger.json()["items"]] == ["3.00"]
        own = await s.client.get(f"/api/v1/wallet/balance?user_id={jane.id}", headers=jane.headers)
        assert own.json() == {"user_id": jane.id, "balance": "7.50"}
        own_ledger = await s.client.get(
            f"/api/v1/wallet/ledger?user_id={jane.id}", headers=jane.headers
        )
        assert own_ledger.json()["total"] == 1
        # Without user_id a person still reads their own.
        assert (await s.client.get("/api/v1/wallet/balance", headers=john.headers)).json()[
            "balance"
        ] == "3.00"
