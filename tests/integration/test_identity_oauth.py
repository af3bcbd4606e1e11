"""The OAuth 2.0 endpoints over HTTP: RFC 6749 grants and errors, RFC 7009 revocation,
RFC 7662 introspection, RFC 8414 metadata and the JWKS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.harness import USER_PASSWORD, Stack, admin, embedded_settings, register_user, stack

TOKEN = "/oauth/token"
CC = {"grant_type": "client_credentials"}


@pytest.fixture
async def s(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    # The password grant is off by default (tests/integration/test_forwarded_and_browsers.py
    # checks it is refused then); these tests cover it turned on.
    monkeypatch.setenv("MERCATO_IDENTITY_PASSWORD_GRANT_ENABLED", "true")
    async with stack(embedded_settings(data_dir), ["accounts", "identity"]) as running:
        yield running


async def new_client(s: Stack, client_id: str = "robot", **fields: Any) -> str:
    boss = await admin(s)
    body = {"client_id": client_id, "name": client_id, "scopes": ["catalog.read"], **fields}
    made = await s.client.post("/api/v1/admin/clients", headers=boss.headers, json=body)
    assert made.status_code == 201, made.text
    return str(made.json()["client_secret"])


def oauth_error(answer: httpx.Response, status: int, error: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert isinstance(answer.json()["error_description"], str)
    assert answer.headers["cache-control"] == "no-store"


async def test_client_credentials_by_basic_and_post_give_rfc9068_tokens(s: Stack) -> None:
    secret = await new_client(s, scopes=["catalog.read", "catalog.write"])
    basic = await s.client.post(TOKEN, data=CC, auth=("robot", secret))
    post = await s.client.post(
        TOKEN, data={**CC, "client_id": "robot", "client_secret": secret, "scope": "catalog.read"}
    )
    for answer, scope in ((basic, "catalog.read catalog.write"), (post, "catalog.read")):
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        assert body["scope"] == scope and "refresh_token" not in body
        token = body["access_token"]
        header = jwt.get_unverified_header(token)
        assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header["kid"]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["sub"] == claims["client_id"] == "robot"
        assert claims["iss"] == s.settings.issuer and claims["aud"] == s.settings.audience
        assert claims["exp"] - claims["iat"] == 3600 and claims["jti"]
        assert claims["scope"] == scope and "roles" not in claims
        me = await s.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json() == {
            "sub": "robot",
            "username": None,
            "email": None,
            "roles": [],
            "scopes": sorted(scope.split()),
            "client_id": "robot",
        }


async def test_token_endpoint_errors_follow_rfc6749(s: Stack) -> None:
    secret = await new_client(s)
    oauth_error(await s.client.post(TOKEN, data={}, auth=("robot", secret)), 400, "invalid_request")
    oauth_error(
        await s.client.post(
            TOKEN, data={"grant_type": "authorization_code"}, auth=("robot", secret)
        ),
        400,
        "unsupported_grant_type",
    )
    oauth_error(await s.client.post(TOKEN, json=CC, auth=("robot", secret)), 400, "invalid_request")
    both = await s.client.post(
        TOKEN, data={**CC, "client_id": "robot", "client_secret": secret}, auth=("robot", secret)
    )
    oauth_error(both, 400, "invalid_request")
    repeated = await s.client.post(
        TOKEN,
        content="grant_type=client_credentials&grant_type=password",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=("robot", secret),
    )
    oauth_error(repeated, 400, "invalid_request")
    for attempt in (
        {"auth": ("nobody", secret)},
        {},
        {"headers": {"Authorization": "Basic !!!"}},
    ):
        answer = await s.client.post(TOKEN, data=CC, **attempt)  # type: ignore[arg-type]
        oauth_error(answer, 401, "invalid_client")
        assert answer.headers["www-authenticate"].startswith("Basic")
    password = {"grant_type": "password", "username": "admin", "password": "x"}
    oauth_error(
        await s.client.post(TOKEN, data=password, auth=("robot", secret)),
        400,
        "unauthorized_client",
    )


async def test_password_and_refresh_grants(s: Stack) -> None:
    await register_user(s, "jane")
    secret = await new_client(s, "app", grant_types=["password"], scopes=["orders.read"])
    other = await new_client(s, "other", grant_types=["password"])
    form = {"grant_type": "password", "username": "jane", "password": USER_PASSWORD}
    answer = await s.client.post(TOKEN, data=form, auth=("app", secret))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == "app" and claims["roles"] == ["user"]
    assert claims["username"] == "jane" and body["expires_in"] == 900
    wrong = await s.client.post(TOKEN, data={**form, "password": "nope"}, auth=("app", secret))
    oauth_error(wrong, 400, "invalid_grant")
    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    # A refresh token is bound to its client: another one (or the public client) cannot spend it.
    oauth_error(
        await s.client.post(TOKEN, data=refresh, auth=("other", other)), 400, "invalid_grant"
    )
    public = {**refresh, "client_id": "mercato-web"}
    oauth_error(await s.client.post(TOKEN, data=public), 400, "invalid_grant")
    rotated = await s.client.post(TOKEN, data=refresh, auth=("app", secret))
    assert rotated.status_code == 200 and rotated.json()["refresh_token"] != body["refresh_token"]


async def test_people_refresh_tokens_work_at_the_token_endpoint_as_the_public_client(
    s: Stack,
) -> None:
    await register_user(s, "jane")
    login = await s.client.post(
        "/api/v1/auth/login", json={"username_or_email": "jane", "password": USER_PASSWORD}
    )
    form = {
        "grant_type": "refresh_token",
        "refresh_token": login.json()["refresh_token"],
        "client_id": "mercato-web",
    }
    answer = await s.client.post(TOKEN, data=form)
    assert answer.status_code == 200, answer.text
    oauth_error(await s.client.post(TOKEN, data=form), 400, "invalid_grant")  # spent


async def test_revocation_rfc7009(s: Stack) -> None:
    secret = await new_client(s)
    token = (await s.client.post(TOKEN, data=CC, auth=("robot", secret))).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await s.client.get("/api/v1/auth/me", headers=bearer)).status_code == 200
    revoked = await s.client.post("/oauth/revoke", data={"token": token}, auth=("robot", secret))
    assert revoked.status_code == 200
    assert (await s.client.get("/api/v1/auth/me", headers=bearer)).status_code == 401
    # Unknown and already revoked tokens are answered the same way (RFC 7009 §2.2).
    for value in (token, "not-a-token"):
        again = await s.client.post("/oauth/revoke", data={"token": value}, auth=("robot", secret))
        assert again.status_code == 200
    oauth_error(await s.client.post("/oauth/revoke", data={"token": token}), 401, "invalid_client")
    # People revoke their refresh tokens as the public client.
    await register_user(s, "jane")
    login = await s.client.post(
        "/api/v1/auth/login", json={"username_or_email": "jane", "password": USER_PASSWORD}
    )
    refresh = login.json()["refresh_token"]
    form = {"token": refresh, "token_type_hint": "refresh_token", "client_id": "mercato-web"}
    assert (await s.client.post("/oauth/revoke", data=form)).status_code == 200
    spent = await s.client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert spent.status_code == 401


async def test_introspection_rfc7662(s: Stack) -> None:
    secret = await new_client(s)
    token = (await s.client.post(TOKEN, data=CC, auth=("robot", secret))).json()["access_token"]
    # Without `mercato.introspect`, every token is inactive to the caller, its own too.
    blind = await s.client.post("/oauth/introspect", data={"token": token}, auth=("robot", secret))
    assert blind.status_code == 200 and blind.json() == {"active": False}
    auditor = await new_client(s, client_id="auditor", scopes=["mercato.introspect"])
    answer = await s.client.post(
        "/oauth/introspect", data={"token": token}, auth=("auditor", auditor)
    )
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["active"] is True and body["client_id"] == "robot"
    assert body["scope"] == "catalog.read" and body["token_type"] == "Bearer"
    assert body["exp"] > body["iat"] and body["sub"] == "robot"
    for value in ("garbage", token[:-4] + "AAAA"):
        dead = await s.client.post(
            "/oauth/introspect", data={"token": value}, auth=("auditor", auditor)
        )
        assert dead.json() == {"active": False}
    anonymous = await s.client.post("/oauth/introspect", data={"token": token})
    oauth_error(anonymous, 401, "invalid_client")


async def test_discovery_and_jwks(s: Stack) -> None:
    meta = (await s.client.get("/.well-known/openid-configuration")).json()
    rfc8414 = await s.client.get("/.well-known/oauth-authorization-server")
    assert rfc8414.status_code == 200 and rfc8414.json() == meta
    issuer = s.settings.issuer
    assert meta["issuer"] == issuer
    assert meta["token_endpoint"] == f"{issuer}/oauth/token"
    assert meta["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert meta["revocation_endpoint"] == f"{issuer}/oauth/revoke"
    assert meta["introspection_endpoint"] == f"{issuer}/oauth/introspect"
    assert set(meta["grant_types_supported"]) == {"client_credentials", "password", "refresh_token"}
    assert set(meta["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }
    keys = (await s.client.get("/.well-known/jwks.json")).json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "EC" and keys[0]["use"] == "sig" and "d" not in keys[0]


async def test_logout_can_end_another_session_of_the_caller_too(s: Stack) -> None:
    await register_user(s, "jane")
    body = {"username_or_email": "jane", "password": USER_PASSWORD}
    laptop = (await s.client.post("/api/v1/auth/login", json=body)).json()
    phone = (await s.client.post("/api/v1/auth/login", json=body)).json()
    answer = await s.client.post(
        "/api/v1/auth/logout",
        headers={"Authorization": f"Bearer {laptop['access_token']}"},
        json={"refresh_token": phone["refresh_token"]},
    )
    assert answer.status_code == 204
    for session in (laptop, phone):
        again = await s.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}
        )
        assert again.status_code == 401
        me = await s.client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {session['access_token']}"}
        )
        assert me.status_code == 401
