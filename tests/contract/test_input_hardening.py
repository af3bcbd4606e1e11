"""Input hardening over HTTP on both targets (issue 11, items 8, 11, 14 and 17): look-alike
usernames, re-authentication with a throttled `current_password`, exact ASCII money, and who
may read whose wallet. On the cluster the replicas share one answer: a look-alike race across
replicas has one winner, and a lock-out on one replica holds on the other."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from tests.contract.api import (
    PASSWORD,
    admin,
    balance,
    bearer,
    client_token,
    is_problem,
    login,
    machine_client,
    register,
    unique,
)
from tests.contract.conftest import Target

ME = "/api/v1/accounts/me"
JSON = {"content-type": "application/json"}
CYRILLIC_A = "\u0430"
GREEK = "αβγδεζηθικλμνξοπ"


def form(username: str) -> dict[str, str]:
    """A registration form with an e-mail of its own."""
    return {
        "username": username,
        "email": f"{uuid.uuid4().hex[:12]}@example.com",
        "password": PASSWORD,
        "confirm_password": PASSWORD,
    }


def test_look_alike_usernames_are_refused(target: Target) -> None:
    with target.client() as client:
        mixed = client.post("/api/v1/accounts/register", json=form(f"{CYRILLIC_A}dmin"))
        assert is_problem(mixed, 422)["errors"][0]["loc"] == ["body", "username"]
        for look_alike in ("ADMIN", "adrnin", "\uff41dmin"):  # the bootstrap admin's look-alikes
            answer = client.post("/api/v1/accounts/register", json=form(look_alike))
            assert is_problem(answer, 409)["errors"][0]["loc"] == ["body", "username"], look_alike
        # A single-script name in another script registers.
        greek = "Ψυχή_" + "".join(GREEK[int(c, 16)] for c in uuid.uuid4().hex[:8])
        made = client.post("/api/v1/accounts/register", json=form(greek))
        assert made.status_code == 201, made.text
        assert made.json()["username"] == greek


def test_a_look_alike_race_across_replicas_has_one_winner(target: Target) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"mary_{tag}", f"rnary_{tag}", f"MARY_{tag}", f"rnAry_{tag}"]
    urls = target.replicas("accounts")

    def attempt(i: int) -> int:
        with target.client(urls[i % len(urls)]) as client:
            return client.post("/api/v1/accounts/register", json=form(names[i])).status_code

    with ThreadPoolExecutor(len(names)) as pool:
        codes = sorted(pool.map(attempt, range(len(names))))
    assert codes == [201, 409, 409, 409], codes


def test_sign_in_changes_need_the_current_password_and_wrong_ones_are_throttled(
    target: Target,
) -> None:
    first, last = target.other_replica("accounts")
    with target.client() as client:
        username, _ = register(client, "reauth")
        headers = login(client, username)
    with target.client(first) as one, target.client(last) as other:
        missing = one.patch(ME, headers=headers, json={"email": f"{username}2@example.com"})
        assert is_problem(missing, 422)["errors"][0]["loc"] == ["body", "current_password"]
        named = one.patch(ME, headers=headers, json={"display_name": "Free to change"})
        assert named.status_code == 200, named.text
        guess = {"username": f"{username}x", "current_password": "Guess-Number-1"}
        # Five free wrong answers and the one that locks are checked (401), on either replica.
        for i in range(6):
            wrong = (one if i % 2 else other).patch(ME, headers=headers, json=guess)
            assert is_problem(wrong, 401)["type"].endswith("/wrong-current-password"), i
        for client in (one, other):
            right = {"username": f"{username}x", "current_password": PASSWORD}
            locked = client.patch(ME, headers=headers, json=right)
            is_problem(locked, 429)
            assert int(locked.headers["Retry-After"]) >= 1
        me = one.get(ME, headers=headers).json()
        assert me["username"] == username and me["display_name"] == "Free to change"


def test_money_is_read_exactly_and_in_ascii_digits(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        username, _ = register(client, "money")
        headers = login(client, username)
        for raw in (b"19.9999999999999999", b'"\xef\xbc\x91\xef\xbc\x99.\xef\xbc\x99\xef\xbc\x99"'):
            topped = client.post(
                "/api/v1/wallet/topup",
                headers={**headers, **JSON},
                content=b'{"amount": ' + raw + b"}",
            )
            assert is_problem(topped, 422)["errors"][0]["loc"] == ["body", "amount"], raw
            made = client.post(
                "/api/v1/products",
                headers={**boss, **JSON},
                content=b'{"name": "' + unique("Book").encode() + b'", "price": ' + raw + b"}",
            )
            assert is_problem(made, 422)["errors"][0]["loc"] == ["body", "price"], raw
        exact = client.post(
            "/api/v1/wallet/topup",
            headers={**headers, **JSON},
            content=b'{"amount": 19.990000000000000000}',
        )
        assert exact.status_code == 200, exact.text
        assert balance(client, headers) == Decimal("19.99")


def test_admins_read_anyones_wallet_people_only_their_own(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        jane_name, jane = register(client, "jane")
        john_name, john = register(client, "john")
        jane_headers, john_headers = login(client, jane_name), login(client, john_name)
        topped = client.post("/api/v1/wallet/topup", headers=john_headers, json={"amount": "4.25"})
        assert topped.status_code == 200, topped.text
        robot_id, secret = machine_client(client, boss, ["mercato.admin"])
        robot = bearer(client_token(client, robot_id, secret).json()["access_token"])
        for path in ("/api/v1/wallet/balance", "/api/v1/wallet/ledger"):
            theirs = f"{path}?user_id={john['id']}"
            is_problem(client.get(theirs, headers=jane_headers), 403)
            own = client.get(f"{path}?user_id={jane['id']}", headers=jane_headers)
            assert own.status_code == 200, own.text
            for reader in (boss, robot):
                seen = client.get(theirs, headers=reader)
                assert seen.status_code == 200, seen.text
        for reader in (boss, robot):
            answer = client.get(f"/api/v1/wallet/balance?user_id={john['id']}", headers=reader)
            assert answer.json() == {"user_id": john["id"], "balance": "4.25"}
            entries = client.get(f"/api/v1/wallet/ledger?user_id={john['id']}", headers=reader)
            assert [e["amount"] for e in entries.json()["items"]] == ["4.25"]
