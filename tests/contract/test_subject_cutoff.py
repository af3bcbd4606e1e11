"""A person's earlier tokens are refused by every replica of every service the moment accounts
answers a change of their roles, password or status (disabled), or their deletion (issue 11
item 3): the demoted admin of the issue kept creating `mercato.admin` machine clients with their
live token.

The change is made on accounts' first replica and checked, without waiting, on each replica of
each service directly (`Target.replicas`); on the embedded target that is the one process.
"""

from __future__ import annotations

import httpx

from tests.contract.api import (
    PASSWORD,
    admin,
    bearer,
    is_problem,
    login_tokens,
    register,
    unique,
    until,
)
from tests.contract.conftest import Target
from tests.contract.test_cross_replica import ADMIN_PROBES, PERSON_PROBES, refused_by, roles_of

NEW_PASSWORD = "Brand-New-Pass-7"


def everywhere(target: Target, probes: dict[str, str]) -> list[str]:
    """What `refused_by` answers when every replica of every probed service refuses."""
    return [f"{service}@{url}" for service in probes for url in target.replicas(service)]


def old_password_refused(client: httpx.Client, username: str) -> httpx.Response:
    """The first login answer with the old password that is not "not yet applied" (503): the
    password check succeeds meanwhile, so these tries never count towards a lock-out."""

    def attempt() -> httpx.Response | None:
        answer = client.post(
            "/api/v1/auth/login", json={"username_or_email": username, "password": PASSWORD}
        )
        assert answer.status_code != 200, "the old password got a token after the change"
        return None if answer.status_code == 503 else answer

    return until(attempt, f"{username}'s old password refused")


def test_a_demoted_admin_is_refused_everywhere_before_the_put_answers(target: Target) -> None:
    first = target.replicas("accounts")[0]
    with target.client() as gateway, target.client(first) as on_accounts:
        boss = admin(gateway)
        username, profile = register(gateway, "demoted")
        path = f"/api/v1/admin/accounts/{profile['id']}/roles"
        promoted = on_accounts.put(path, headers=boss, json={"roles": ["user", "admin"]})
        assert promoted.status_code == 200, promoted.text
        until(lambda: "admin" in roles_of(gateway, username), "the promotion reaches identity")
        earlier = bearer(login_tokens(gateway, username)["access_token"])
        assert refused_by(target, earlier, ADMIN_PROBES) == []

        demoted = on_accounts.put(path, headers=boss, json={"roles": ["user"]})
        assert demoted.status_code == 200 and demoted.json()["roles"] == ["user"], demoted.text
        # No waiting: the PUT has answered, so every replica must refuse the earlier token.
        assert refused_by(target, earlier, ADMIN_PROBES) == everywhere(target, ADMIN_PROBES)
        assert refused_by(target, earlier, PERSON_PROBES) == everywhere(target, PERSON_PROBES)
        for url in target.replicas("identity"):
            escalate = {"client_id": unique("bot"), "name": "bot", "scopes": ["mercato.admin"]}
            made = httpx.post(f"{url}/api/v1/admin/clients", headers=earlier, json=escalate)
            is_problem(made, 401)

        # A login afterwards works on every identity replica, without the role.
        until(lambda: "admin" not in roles_of(gateway, username), "the demotion reaches identity")
        for url in target.replicas("identity"):
            with target.client(url) as on_identity:
                fresh = bearer(login_tokens(on_identity, username)["access_token"])
            assert refused_by(target, fresh, PERSON_PROBES) == []
            for replica in target.replicas("accounts"):
                listed = httpx.get(f"{replica}/api/v1/admin/accounts", headers=fresh, timeout=30)
                is_problem(listed, 403)


def test_a_password_change_and_a_deletion_are_refused_everywhere_at_once(
    target: Target,
) -> None:
    first = target.replicas("accounts")[0]
    with target.client() as gateway, target.client(first) as on_accounts:
        username, _ = register(gateway, "changer")
        earlier = bearer(login_tokens(gateway, username)["access_token"])
        assert refused_by(target, earlier, PERSON_PROBES) == []
        changed = on_accounts.patch(
            "/api/v1/accounts/me",
            headers=earlier,
            json={"password": NEW_PASSWORD, "current_password": PASSWORD},
        )
        assert changed.status_code == 200, changed.text
        assert refused_by(target, earlier, PERSON_PROBES) == everywhere(target, PERSON_PROBES)

        # Until identity applies the change the old password gets no token (503, try again);
        # then it is refused, and the new one works.
        is_problem(old_password_refused(gateway, username), 401)
        fresh = bearer(login_tokens(gateway, username, NEW_PASSWORD)["access_token"])
        assert refused_by(target, fresh, PERSON_PROBES) == []
        deleted = on_accounts.delete("/api/v1/accounts/me", headers=fresh)
        assert deleted.status_code == 204, deleted.text
        assert refused_by(target, fresh, PERSON_PROBES) == everywhere(target, PERSON_PROBES)


def test_a_disabled_person_is_refused_everywhere_at_once_and_comes_back_when_enabled(
    target: Target,
) -> None:
    first = target.replicas("accounts")[0]
    with target.client() as gateway, target.client(first) as on_accounts:
        boss = admin(gateway)
        username, profile = register(gateway, "disabled")
        tokens = login_tokens(gateway, username)
        earlier = bearer(tokens["access_token"])
        assert refused_by(target, earlier, PERSON_PROBES) == []
        path = f"/api/v1/admin/accounts/{profile['id']}/status"
        is_problem(on_accounts.put(path, headers=boss, json={"status": "gone"}), 422)

        disabled = on_accounts.put(path, headers=boss, json={"status": "disabled"})
        assert disabled.status_code == 200 and disabled.json()["status"] == "disabled", (
            disabled.text
        )
        # No waiting: the PUT has answered, so every replica must refuse the earlier token.
        assert refused_by(target, earlier, PERSON_PROBES) == everywhere(target, PERSON_PROBES)
        # Until identity applies it the login is "not yet" (503); then the password is refused.
        is_problem(old_password_refused(gateway, username), 401)
        renewed = gateway.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        is_problem(renewed, 401)

        enabled = on_accounts.put(path, headers=boss, json={"status": "active"})
        assert enabled.status_code == 200 and enabled.json()["status"] == "active", enabled.text
        fresh = bearer(login_tokens(gateway, username)["access_token"])
        assert refused_by(target, fresh, PERSON_PROBES) == []
        assert refused_by(target, earlier, PERSON_PROBES) == everywhere(target, PERSON_PROBES)
