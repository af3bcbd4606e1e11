"""State replicas must agree on, changed on one replica and checked on another (issue 14): key
rotation, client deletion, logout, role change, login throttling and token budgets.

Requests are pinned by calling replicas directly (`Target.replicas`), not only through nginx,
whose round robin could land them on the replica that made the change. On the embedded target
every "replica" is the one process, so the same assertions hold trivially there, as they must.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

import httpx

from tests.contract.api import (
    PASSWORD,
    admin,
    bearer,
    client_token,
    login_tokens,
    machine_client,
    register,
    unique,
    until,
)
from tests.contract.conftest import Target

# Per service, a request any authenticated caller gets past authentication with (2xx or 403),
# so 401 means exactly "this replica refused the token".
PERSON_PROBES = {
    "accounts": "/api/v1/accounts/me",
    "identity": "/api/v1/auth/me",
    "catalog": "/api/v1/products?include_inactive=true",
    "wallet": "/api/v1/wallet/balance",
    "orders": "/api/v1/orders",
    "integration": "/api/v1/jobs",
}
ADMIN_PROBES = {
    "accounts": "/api/v1/admin/accounts",
    "identity": "/api/v1/admin/clients",
    "catalog": "/api/v1/products?include_inactive=true",
    "orders": "/api/v1/admin/orders",
    "integration": "/api/v1/jobs",
}


def refused_by(target: Target, headers: dict[str, str], probes: dict[str, str]) -> list[str]:
    """Every replica of every probed service that answers 401 to these credentials."""
    refusing = []
    for service, path in probes.items():
        for url in target.replicas(service):
            answer = httpx.get(f"{url}{path}", headers=headers, timeout=30)
            assert answer.status_code != 500, (url, path, answer.text)
            if answer.status_code == 401:
                refusing.append(f"{service}@{url}")
    return refusing


def kid_of(token: str) -> str:
    """The `kid` in a JWT's header."""
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def jwks_kids(url: str) -> set[str]:
    """The key ids a replica publishes."""
    keys = httpx.get(f"{url}/.well-known/jwks.json", timeout=30).json()["keys"]
    return {str(key["kid"]) for key in keys}


def test_a_rotation_on_one_replica_is_used_and_published_by_every_replica(
    target: Target,
) -> None:
    first, other = target.other_replica("identity")
    with target.client(first) as on_first, target.client(other) as on_other:
        boss = admin(on_first)
        bot, secret = machine_client(on_first, boss, ["mercato.admin"])
        before = until(lambda: client_token(on_other, bot, secret).json(), "token before")
        rotated = on_first.post("/api/v1/admin/keys/rotate", headers=boss)
        assert rotated.status_code in (200, 201), rotated.text
        new_kid = rotated.json()["kid"]

        def every_jwks_lists_it() -> bool:
            listed = [jwks_kids(url) for url in target.replicas("identity")]
            listed.append(jwks_kids(target.base_url))
            return all(new_kid in kids for kids in listed) and all(
                kids == listed[0] for kids in listed
            )

        until(every_jwks_lists_it, f"every JWKS lists {new_kid}", timeout=15)

        def signed_with_new_key() -> str | None:
            answer = client_token(on_other, bot, secret)
            assert answer.status_code == 200, answer.text
            token = str(answer.json()["access_token"])
            return token if kid_of(token) == new_kid else None

        after = until(signed_with_new_key, "the other replica signs with the new key", 15)
    for token in (before["access_token"], after):
        assert refused_by(target, bearer(token), ADMIN_PROBES) == [], kid_of(token)


def test_a_deleted_client_is_refused_by_every_replica_before_the_delete_answers(
    target: Target,
) -> None:
    first, other = target.other_replica("identity")
    with target.client(first) as on_first, target.client(other) as on_other:
        boss = admin(on_first)
        bot, secret = machine_client(on_first, boss, ["mercato.admin"])
        issued = until(lambda: client_token(on_other, bot, secret).json(), "token before")
        assert refused_by(target, bearer(issued["access_token"]), ADMIN_PROBES) == []
        deleted = on_first.delete(f"/api/v1/admin/clients/{bot}", headers=boss)
        assert deleted.status_code == 204, deleted.text
        # No waiting: the delete has answered, so every replica must know.
        for url in target.replicas("identity"):
            again = client_token(httpx.Client(base_url=url, timeout=30), bot, secret)
            assert again.status_code == 401, (url, again.text)
            assert again.json()["error"] == "invalid_client"
        refusing = refused_by(target, bearer(issued["access_token"]), ADMIN_PROBES)
    expected = [f"{service}@{url}" for service in ADMIN_PROBES for url in target.replicas(service)]
    assert refusing == expected


def test_logout_on_one_replica_is_refused_at_once_by_every_replica(target: Target) -> None:
    first, other = target.other_replica("identity")
    with (
        target.client() as gateway,
        target.client(first) as on_first,
        target.client(other) as on_other,
    ):
        username, _ = register(gateway, "leaver")
        tokens = login_tokens(on_first, username)
        headers = bearer(tokens["access_token"])
        assert refused_by(target, headers, PERSON_PROBES) == []
        assert on_other.post("/api/v1/auth/logout", headers=headers).status_code == 204
        refusing = refused_by(target, headers, PERSON_PROBES)
        refreshed = on_first.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
    expected = [f"{service}@{url}" for service in PERSON_PROBES for url in target.replicas(service)]
    assert refusing == expected
    assert refreshed.status_code == 401, refreshed.text


def roles_of(client: httpx.Client, username: str) -> list[str]:
    """The roles a fresh login of `username` carries (as /api/v1/auth/me reads them)."""
    token = login_tokens(client, username)["access_token"]
    me = client.get("/api/v1/auth/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    return list(me.json()["roles"])


def test_a_role_change_on_one_replica_holds_on_every_other(target: Target) -> None:
    accounts_first, accounts_other = target.other_replica("accounts")
    identity_first, identity_other = target.other_replica("identity")
    catalog_first, catalog_other = target.other_replica("catalog")
    with (
        target.client(accounts_first) as on_accounts,
        target.client(accounts_other) as on_accounts_other,
        target.client(identity_other) as on_identity_other,
        target.client(identity_first) as on_identity,
    ):
        boss = admin(on_identity)
        username, profile = register(on_accounts, "promoted")
        path = f"/api/v1/admin/accounts/{profile['id']}/roles"
        made = on_accounts.put(path, headers=boss, json={"roles": ["user", "admin"]})
        assert made.status_code == 200 and "admin" in made.json()["roles"], made.text
        until(lambda: "admin" in roles_of(on_identity_other, username), "promotion seen")
        promoted = bearer(login_tokens(on_identity_other, username)["access_token"])
        body = {"name": unique("Promoted"), "price": "3.00", "stock": 1}
        wrote = httpx.post(f"{catalog_other}/api/v1/products", headers=promoted, json=body)
        assert wrote.status_code == 201, wrote.text

        back = on_accounts_other.put(path, headers=boss, json={"roles": ["user"]})
        assert back.status_code == 200 and back.json()["roles"] == ["user"], back.text
        until(lambda: "admin" not in roles_of(on_identity, username), "demotion seen")
        demoted = bearer(login_tokens(on_identity, username)["access_token"])
        refused = httpx.post(f"{catalog_first}/api/v1/products", headers=demoted, json=body)
        assert refused.status_code == 403, refused.text


def test_login_failures_count_across_replicas(target: Target) -> None:
    replicas = cycle(target.replicas("identity"))
    with target.client() as client:
        username, _ = register(client, "guessed")
        login_tokens(client, username)  # known to identity: failures count from here
    answers = []
    for _ in range(7):
        wrong = {"username_or_email": username, "password": "Wrong-Guess-1"}
        answers.append(httpx.post(f"{next(replicas)}/api/v1/auth/login", json=wrong, timeout=30))
    # Five free failures, a sixth that locks the account out, then 429 wherever it is tried.
    assert [a.status_code for a in answers[:6]] == [401] * 6, [a.text for a in answers]
    assert answers[6].status_code == 429 and int(answers[6].headers["retry-after"]) > 0
    for url in target.replicas("identity"):
        right = {"username_or_email": username, "password": PASSWORD}
        locked = httpx.post(f"{url}/api/v1/auth/login", json=right, timeout=30)
        assert locked.status_code == 429, (url, locked.text)


def test_a_token_budget_is_one_budget_across_replicas(target: Target) -> None:
    replicas = cycle(target.replicas("identity"))
    with target.client() as client:
        boss = admin(client)
        bot, secret = machine_client(client, boss, ["catalog.read"], token_budget_per_hour=3)
    statuses = []
    for _ in range(4):
        with target.client(next(replicas)) as on_replica:
            statuses.append(client_token(on_replica, bot, secret))
    assert [s.status_code for s in statuses] == [200, 200, 200, 429], [s.text for s in statuses]
    assert int(statuses[3].headers["retry-after"]) > 0


def test_concurrent_wrong_passwords_on_both_replicas_get_six_checks(target: Target) -> None:
    """The first failures of a fresh account race on both replicas at once (issue 11 item 7):
    five free failures and the one that locks, then 429, however the guesses interleave."""
    with target.client() as client:
        username, _ = register(client, "raced")
        login_tokens(client, username)
    urls = target.replicas("identity")
    wrong = {"username_or_email": username, "password": "Wrong-Guess-1"}

    def guess(index: int) -> int:
        url = urls[index % len(urls)]
        return httpx.post(f"{url}/api/v1/auth/login", json=wrong, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = Counter(pool.map(guess, range(30)))
    assert statuses == Counter({401: 6, 429: 24}), statuses
