"""The RBAC matrix of DESIGN §2 over HTTP, on both targets: every admin-only endpoint refuses an
anonymous caller (401), a plain user (403) and a machine client without `mercato.admin` (403),
and answers an admin (a person with role `admin`, or a machine with `mercato.admin`) with its
documented success; user-only endpoints refuse anonymous callers; a role change takes effect at
the next login, both ways."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.contract.api import (
    admin,
    bearer,
    client_token,
    is_problem,
    login,
    machine_client,
    register,
    unique,
    until,
)
from tests.contract.conftest import Target

ANON, USER, CLIENT, ADMIN, ADMIN_CLIENT = "anon", "user", "client", "admin", "admin-client"
REFUSED = {ANON: 401, USER: 403, CLIENT: 403}
# Person tokens live 15 min; the module re-logs in well before that on a slow runner.
RENEW_AFTER = 300.0


@dataclass
class Actors:
    """The callers of the matrix on one target, logged in lazily and renewed when old."""

    target: Target
    client: httpx.Client
    user_id: str = ""
    _username: str = ""
    _bots: dict[str, tuple[str, str]] = field(default_factory=dict)
    _cache: dict[str, tuple[float, dict[str, str]]] = field(default_factory=dict)

    def boss(self) -> dict[str, str]:
        """The bootstrap admin's header."""
        return self.headers(ADMIN)

    def headers(self, who: str) -> dict[str, str]:
        """The Authorization header for `who` (none for anonymous)."""
        if who == ANON:
            return {}
        cached = self._cache.get(who)
        if cached is None or time.monotonic() - cached[0] > RENEW_AFTER:
            cached = (time.monotonic(), self._log_in(who))
            self._cache[who] = cached
        return cached[1]

    def _log_in(self, who: str) -> dict[str, str]:
        if who == ADMIN:
            return admin(self.client)
        if who == USER:
            if not self._username:
                self._username, profile = register(self.client, "rbac_user")
                self.user_id = str(profile["id"])
            return login(self.client, self._username)
        scopes = ["catalog.read"] if who == CLIENT else ["mercato.admin"]
        if who not in self._bots:
            self._bots[who] = machine_client(self.client, self.boss(), scopes)
        answer = client_token(self.client, *self._bots[who])
        assert answer.status_code == 200, answer.text
        return bearer(answer.json()["access_token"])


@pytest.fixture(scope="module")
def actors(target: Target) -> Iterator[Actors]:
    """The matrix's callers for this module on the current target."""
    with target.client() as client:
        yield Actors(target, client)


@dataclass(frozen=True)
class Call:
    """One prepared request, what to check once it was refused, and what the success check needs."""

    method: str
    path: str
    json: Any = None
    after_refusal: Callable[[], None] | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """An admin-only endpoint: how to call it, and what an admin's success looks like."""

    id: str
    prepare: Callable[[Actors, str], Call]
    succeeded: Callable[[Actors, Call, httpx.Response], None] | None


def is_page(answer: httpx.Response) -> list[dict[str, Any]]:
    """Assert a 200 list page (DESIGN §2's envelope); its items."""
    assert answer.status_code == 200, (answer.status_code, answer.text)
    body = answer.json()
    assert set(body) >= {"items", "total", "skip", "limit"}, body
    assert isinstance(body["items"], list) and body["total"] >= len(body["items"]), body
    assert body["skip"] == 0 and body["limit"] == 50, body
    return list(body["items"])


def roles_of(a: Actors, user_id: str) -> list[str]:
    """A user's roles as the admin list shows them."""
    return list(account_of(a, user_id)["roles"])


def account_of(a: Actors, user_id: str) -> dict[str, Any]:
    """A user's profile as the admin list shows it (searched from the newest page back)."""
    boss = a.boss()
    total = a.client.get("/api/v1/admin/accounts", headers=boss, params={"limit": 1})
    skip = max(0, total.json()["total"] - 500)
    while True:
        page = a.client.get(
            "/api/v1/admin/accounts", headers=boss, params={"skip": skip, "limit": 500}
        ).json()
        for item in page["items"]:
            if item["id"] == user_id:
                return dict(item)
        assert skip > 0, f"account {user_id} not listed"
        skip = max(0, skip - 500)


def fresh_user_id(a: Actors) -> str:
    """A new account's id (registered, never logged in)."""
    _, profile = register(a.client, "rbac_target")
    return str(profile["id"])


def new_client(a: Actors) -> tuple[str, str]:
    """A client the admin registers for a row to delete."""
    return machine_client(a.client, a.boss(), ["catalog.read"])


# --- rows: preparing each call ----------------------------------------------------------------


def _get(path: str) -> Callable[[Actors, str], Call]:
    def prepare(_: Actors, __: str) -> Call:
        return Call("GET", path)

    return prepare


def _put_roles(a: Actors, who: str) -> Call:
    if who in REFUSED:
        # The attack: make an account an admin (a user tries it on their own account).
        a.headers(USER)
        user_id = a.user_id if who == USER else fresh_user_id(a)
        return Call(
            "PUT",
            f"/api/v1/admin/accounts/{user_id}/roles",
            json={"roles": ["user", "admin"]},
            after_refusal=lambda: _still_plain(a, user_id),
        )
    user_id = fresh_user_id(a)
    return Call(
        "PUT",
        f"/api/v1/admin/accounts/{user_id}/roles",
        json={"roles": ["user"]},
        context={"user_id": user_id},
    )


def _still_plain(a: Actors, user_id: str) -> None:
    assert roles_of(a, user_id) == ["user"]


def _put_status(a: Actors, who: str) -> Call:
    user_id = fresh_user_id(a)
    if who in REFUSED:
        # The attack: lock someone else out of their account.
        a.headers(USER)
        return Call(
            "PUT",
            f"/api/v1/admin/accounts/{user_id}/status",
            json={"status": "disabled"},
            after_refusal=lambda: _still_active(a, user_id),
        )
    return Call(
        "PUT",
        f"/api/v1/admin/accounts/{user_id}/status",
        json={"status": "disabled"},
        context={"user_id": user_id},
    )


def _still_active(a: Actors, user_id: str) -> None:
    assert account_of(a, user_id)["status"] == "active"


def _post_client(a: Actors, who: str) -> Call:
    client_id = unique("rbac_bot")

    def not_created() -> None:
        is_problem(a.client.delete(f"/api/v1/admin/clients/{client_id}", headers=a.boss()), 404)

    return Call(
        "POST",
        "/api/v1/admin/clients",
        json={"client_id": client_id, "name": "rbac", "scopes": ["mercato.admin"]},
        after_refusal=not_created,
        context={"client_id": client_id},
    )


def _delete_client(a: Actors, who: str) -> Call:
    client_id, secret = new_client(a)

    def still_there() -> None:
        assert client_token(a.client, client_id, secret).status_code == 200

    return Call(
        "DELETE",
        f"/api/v1/admin/clients/{client_id}",
        after_refusal=still_there,
        context={"client_id": client_id, "secret": secret},
    )


def _post_product(a: Actors, who: str) -> Call:
    name = unique("RbacBook")

    def not_created() -> None:
        found = a.client.get("/api/v1/products", params={"q": name})
        assert found.status_code == 200 and found.json()["total"] == 0, found.text

    return Call(
        "POST",
        "/api/v1/products",
        json={"name": name, "price": "20.00", "stock": 1},
        after_refusal=not_created,
        context={"name": name},
    )


def _post(path: str) -> Callable[[Actors, str], Call]:
    def prepare(_: Actors, __: str) -> Call:
        return Call("POST", path)

    return prepare


def _rotate(a: Actors, who: str) -> Call:
    assert who in REFUSED, "the matrix never rotates the keys"
    before = _kids(a)
    return Call("POST", "/api/v1/admin/keys/rotate", after_refusal=lambda: _same_keys(a, before))


def _kids(a: Actors) -> set[str]:
    answer = a.client.get("/.well-known/jwks.json")
    assert answer.status_code == 200, answer.text
    return {key["kid"] for key in answer.json()["keys"]}


def _same_keys(a: Actors, before: set[str]) -> None:
    assert _kids(a) == before


# --- rows: what an admin's success looks like -------------------------------------------------


def _accounts_listed(a: Actors, _: Call, answer: httpx.Response) -> None:
    items = is_page(answer)
    assert items and all({"id", "username", "email", "roles"} <= set(i) for i in items), items
    assert all("password" not in i and "password_hash" not in i for i in items), items


def _roles_set(a: Actors, call: Call, answer: httpx.Response) -> None:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == call.context["user_id"] and body["roles"] == ["user"], body


def _status_set(a: Actors, call: Call, answer: httpx.Response) -> None:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == call.context["user_id"] and body["status"] == "disabled", body


def _client_created(a: Actors, call: Call, answer: httpx.Response) -> None:
    assert answer.status_code == 201, answer.text
    body = answer.json()
    client_id = call.context["client_id"]
    assert body["client_id"] == client_id and body["client_secret"], body
    assert body["scopes"] == ["mercato.admin"], body
    assert answer.headers["cache-control"] == "no-store"
    assert client_token(a.client, client_id, body["client_secret"]).status_code == 200
    gone = a.client.delete(f"/api/v1/admin/clients/{client_id}", headers=a.boss())
    assert gone.status_code == 204, gone.text


def _clients_listed(a: Actors, _: Call, answer: httpx.Response) -> None:
    items = is_page(answer)
    assert items and all("client_id" in i and "scopes" in i for i in items), items
    assert all("client_secret" not in i and "secret_hash" not in i for i in items), items


def _client_deleted(a: Actors, call: Call, answer: httpx.Response) -> None:
    assert answer.status_code == 204, answer.text
    refused = client_token(a.client, call.context["client_id"], call.context["secret"])
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


def _page_listed(_: Actors, __: Call, answer: httpx.Response) -> None:
    is_page(answer)


def _product_created(a: Actors, call: Call, answer: httpx.Response) -> None:
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["name"] == call.context["name"] and body["price"] == "20.00", body
    assert body["source"] == "local" and body["status"] == "available", body
    shown = a.client.get(f"/api/v1/products/{body['id']}")
    assert shown.status_code == 200 and shown.json()["name"] == call.context["name"]


def _token_status(_: Actors, __: Call, answer: httpx.Response) -> None:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert isinstance(body, dict) and body, body
    for upstream in body.values():
        assert {
            "has_token",
            "expires_at",
            "renew_at",
            "requests_last_hour",
            "budget_per_hour",
        } <= set(upstream), upstream
        assert "access_token" not in upstream and "token" not in upstream, upstream


def _jobs_listed(_: Actors, __: Call, answer: httpx.Response) -> None:
    items = is_page(answer)
    names = {i["name"] for i in items}
    assert {"export-products", "sync-external-products"} <= names, names
    assert all("schedule" in i and "next_run_at" in i and "last_run" in i for i in items), items


def _accepted(job: str) -> Callable[[Actors, Call, httpx.Response], None]:
    def check(a: Actors, _: Call, answer: httpx.Response) -> None:
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["run_id"]
        assert isinstance(run_id, str) and run_id, answer.json()

        def recorded() -> bool:
            runs = a.client.get(f"/api/v1/jobs/{job}/runs", headers=a.boss(), params={"limit": 500})
            return run_id in {r["id"] for r in runs.json()["items"]}

        until(recorded, f"run {run_id} of {job} in its history")

    return check


def _stats(_: Actors, __: Call, answer: httpx.Response) -> None:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["service"] == "identity", body
    assert {"outbox_backlog", "inbox_size", "dead_letters"} <= set(body), body


ROWS = [
    Row("GET-admin-accounts", _get("/api/v1/admin/accounts"), _accounts_listed),
    Row("PUT-admin-accounts-roles", _put_roles, _roles_set),
    Row("PUT-admin-accounts-status", _put_status, _status_set),
    Row("POST-admin-clients", _post_client, _client_created),
    Row("GET-admin-clients", _get("/api/v1/admin/clients"), _clients_listed),
    Row("DELETE-admin-clients", _delete_client, _client_deleted),
    Row("GET-admin-orders", _get("/api/v1/admin/orders"), _page_listed),
    Row("POST-products", _post_product, _product_created),
    Row("GET-integration-token-status", _get("/api/v1/integration/token/status"), _token_status),
    Row("GET-jobs", _get("/api/v1/jobs"), _jobs_listed),
    Row(
        "POST-jobs-run",
        _post("/api/v1/jobs/export-products/run"),
        _accepted("export-products"),
    ),
    Row("GET-exports", _get("/api/v1/exports"), _page_listed),
    Row("GET-external-orders", _get("/api/v1/external-orders"), _page_listed),
    Row("POST-sync-trigger", _post("/api/v1/sync/trigger"), _accepted("sync-external-products")),
    Row("GET-events-stats", _get("/api/v1/events/identity/stats"), _stats),
    Row("POST-admin-keys-rotate", _rotate, None),
]


def _matrix() -> list[Any]:
    cases = []
    for row in ROWS:
        for who in (ANON, USER, CLIENT, ADMIN, ADMIN_CLIENT):
            if row.succeeded is None and who not in REFUSED:
                continue
            cases.append(pytest.param(row, who, id=f"{row.id}-{who}"))
    return cases


@pytest.mark.parametrize(("row", "who"), _matrix())
def test_admin_endpoint(actors: Actors, row: Row, who: str) -> None:
    call = row.prepare(actors, who)
    answer = actors.client.request(
        call.method,
        call.path,
        json=call.json,
        headers=actors.headers(who),
    )
    if who in REFUSED:
        body = is_problem(answer, REFUSED[who])
        if who == ANON:
            assert answer.headers["www-authenticate"].lower().startswith("bearer"), answer.headers
        assert "items" not in body and "client_secret" not in body, body
        if call.after_refusal is not None:
            call.after_refusal()
        return
    assert row.succeeded is not None
    row.succeeded(actors, call, answer)


@pytest.mark.parametrize(
    "path", ["/api/v1/wallet/balance", "/api/v1/orders", "/api/v1/accounts/me"]
)
def test_user_endpoint_refuses_anonymous(actors: Actors, path: str) -> None:
    anonymous = actors.client.get(path)
    is_problem(anonymous, 401)
    assert anonymous.headers["www-authenticate"].lower().startswith("bearer"), anonymous.headers
    mine = actors.client.get(path, headers=actors.headers(USER))
    assert mine.status_code == 200, mine.text


def test_a_promoted_user_administers_until_demoted(actors: Actors) -> None:
    client, boss = actors.client, actors.boss()
    username, profile = register(client, "promoted")
    user_id = profile["id"]
    is_problem(client.get("/api/v1/admin/accounts", headers=login(client, username)), 403)

    promoted = client.put(
        f"/api/v1/admin/accounts/{user_id}/roles", headers=boss, json={"roles": ["user", "admin"]}
    )
    assert promoted.status_code == 200, promoted.text
    assert sorted(promoted.json()["roles"]) == ["admin", "user"], promoted.json()

    def lists_accounts() -> bool:
        headers = login(client, username)
        return client.get("/api/v1/admin/accounts", headers=headers).status_code == 200

    until(lists_accounts, "the promoted user, logged in again, lists accounts")
    listed = client.get("/api/v1/admin/accounts", headers=login(client, username))
    assert listed.status_code == 200 and listed.json()["total"] >= 1, listed.text
    me = client.get("/api/v1/auth/me", headers=login(client, username)).json()
    assert "admin" in me["roles"], me

    demoted = client.put(
        f"/api/v1/admin/accounts/{user_id}/roles", headers=boss, json={"roles": ["user"]}
    )
    assert demoted.status_code == 200 and demoted.json()["roles"] == ["user"], demoted.text

    def refused() -> bool:
        headers = login(client, username)
        return client.get("/api/v1/admin/accounts", headers=headers).status_code == 403

    until(refused, "the demoted user, logged in again, is refused")
    is_problem(client.get("/api/v1/admin/accounts", headers=login(client, username)), 403)
