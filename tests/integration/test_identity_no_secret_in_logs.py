"""All log output of a session of logins, refreshes, logouts and client grants holds no password,
refresh token, client secret or access token."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from mercato.platform.logging import configure_logging
from tests.harness import USER_PASSWORD, admin, embedded_settings, register_user, stack

WRONG_PASSWORD = "Wrong-Password-Typed-777"


@pytest.fixture
def debug_logging() -> Iterator[io.StringIO]:
    """The platform's production logging at DEBUG, written to a buffer the test reads."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("DEBUG", json=True)
    buffer = io.StringIO()
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


async def test_a_session_logs_no_secret(
    data_dir: Path,
    debug_logging: io.StringIO,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The password grant is off by default; on here, so its secrets are in the session too.
    monkeypatch.setenv("MERCATO_IDENTITY_PASSWORD_GRANT_ENABLED", "true")
    secrets: list[str] = [USER_PASSWORD, WRONG_PASSWORD]
    async with stack(embedded_settings(data_dir), ["accounts", "identity"]) as s:
        boss = await admin(s)
        jane = await register_user(s, "jane")
        secrets.append(jane.headers["Authorization"].split()[1])
        failed = await s.client.post(
            "/api/v1/auth/login", json={"username_or_email": "jane", "password": WRONG_PASSWORD}
        )
        assert failed.status_code == 401
        # A password typed into the login-name field must not be logged either.
        await s.client.post(
            "/api/v1/auth/login", json={"username_or_email": WRONG_PASSWORD, "password": "x"}
        )
        pair = (
            await s.client.post(
                "/api/v1/auth/login", json={"username_or_email": "jane", "password": USER_PASSWORD}
            )
        ).json()
        secrets += [pair["access_token"], pair["refresh_token"]]
        rotated = (
            await s.client.post(
                "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
            )
        ).json()
        secrets += [rotated["access_token"], rotated["refresh_token"]]
        reused = await s.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert reused.status_code == 401
        made = await s.client.post(
            "/api/v1/admin/clients",
            headers=boss.headers,
            json={
                "client_id": "app",
                "name": "app",
                "scopes": ["a"],
                "grant_types": ["client_credentials", "password"],
            },
        )
        secret = made.json()["client_secret"]
        secrets.append(secret)
        for attempt in (
            {"auth": ("app", secret), "data": {"grant_type": "client_credentials"}},
            {
                "data": {
                    "grant_type": "client_credentials",
                    "client_id": "app",
                    "client_secret": secret,
                }
            },
            {"auth": ("app", secret + "x"), "data": {"grant_type": "client_credentials"}},
            {
                "auth": ("app", secret),
                "data": {"grant_type": "password", "username": "jane", "password": USER_PASSWORD},
            },
        ):
            answer = await s.client.post("/oauth/token", **attempt)  # type: ignore[arg-type]
            if answer.status_code == 200:
                secrets.append(answer.json()["access_token"])
                if "refresh_token" in answer.json():
                    secrets.append(answer.json()["refresh_token"])
        await s.client.post("/oauth/introspect", data={"token": secrets[-1]}, auth=("app", secret))
        await s.client.post("/oauth/revoke", data={"token": secrets[-2]}, auth=("app", secret))
        await s.client.post(
            "/api/v1/auth/logout", headers={"Authorization": f"Bearer {rotated['access_token']}"}
        )
        await s.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secrets[2]}x"})
    out, err = capfd.readouterr()
    output = debug_logging.getvalue() + out + err
    assert "login" in output and "client registered" in output  # the logs were captured
    for value in secrets:
        assert value not in output
        if value.count(".") == 2:  # a JWT: not even its signature
            assert value.rsplit(".", 1)[1] not in output
