"""`mercato run` driven over real HTTP: register, log in, me, log out, and the logged-out token
stays refused, even after a restart."""

from __future__ import annotations

import time

import httpx

from tests.e2e.conftest import RunningPlatform, start_platform, stop_platform

PASSWORD = "Correct-Horse-9"


def login_when_replicated(client: httpx.Client, who: str) -> httpx.Response:
    """Identity applies `user.created` a moment after registration; poll its replica through
    the only public signal there is, without hammering the throttle (a few tries, spaced)."""
    for _ in range(4):
        answer = client.post(
            "/api/v1/auth/login", json={"username_or_email": who, "password": PASSWORD}
        )
        if answer.status_code != 401:
            return answer
        time.sleep(0.5)
    return answer


def test_register_login_me_logout_over_http(platform: RunningPlatform) -> None:
    with platform.client() as client:
        registered = client.post(
            "/api/v1/accounts/register",
            json={
                "username": "jane",
                "email": "jane@example.com",
                "password": PASSWORD,
                "confirm_password": PASSWORD,
            },
        )
        assert registered.status_code == 201, registered.text
        answer = login_when_replicated(client, "jane@example.com")
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        bearer = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        me = client.get("/api/v1/auth/me", headers=bearer)
        assert me.status_code == 200 and me.json()["username"] == "jane"
        assert client.get("/api/v1/accounts/me", headers=bearer).status_code == 200
        assert client.post("/api/v1/auth/logout", headers=bearer).status_code == 204
        assert client.get("/api/v1/auth/me", headers=bearer).status_code == 401
        assert client.get("/api/v1/accounts/me", headers=bearer).status_code == 401
        jwks = client.get("/.well-known/jwks.json").json()
    assert answer.json()["access_token"] not in platform.log()
    stop_platform(platform)
    again = start_platform(platform.data_dir)
    try:
        with again.client() as client:
            assert client.get("/.well-known/jwks.json").json() == jwks  # same key after restart
            assert client.get("/api/v1/auth/me", headers=bearer).status_code == 401
    finally:
        stop_platform(again)
