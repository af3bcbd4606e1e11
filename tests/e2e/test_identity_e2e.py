"""`mercato run` driven over real HTTP: register, log in, me, log out, and the logged-out token
stays refused, even after a restart."""

from __future__ import annotations

from pathlib import Path

import httpx

from mercato.app import build_platform
from mercato.platform.settings import Settings
from tests.e2e.conftest import RunningPlatform, start_platform, stop_platform
from tests.running import login_when_replicated

ADMIN_PASSWORD = "Admin-Pass-1234"

PASSWORD = "Correct-Horse-9"


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
        answer = login_when_replicated(client, "jane@example.com", PASSWORD)
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
    stop_platform(platform, keep_port=True)
    # The same address, so the same issuer: the old token is refused for being logged out.
    again = start_platform(platform.data_dir, reserved=platform.reserved)
    try:
        with again.client() as client:
            assert client.get("/.well-known/jwks.json").json() == jwks  # same key after restart
            assert client.get("/api/v1/auth/me", headers=bearer).status_code == 401
    finally:
        stop_platform(again)


async def test_a_service_without_identity_verifies_tokens_with_the_issuers_jwks(
    tmp_path: Path,
) -> None:
    identity = start_platform(
        tmp_path / "identity-data", extra_env={"MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD}
    )
    issuer = identity.base_url
    try:
        with identity.client() as client:
            answer = login_when_replicated(client, "admin", ADMIN_PASSWORD)
            assert answer.status_code == 200, answer.text
        bearer = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        # Accounts alone in this process, no MERCATO_IDENTITY_URL: keys come from the issuer.
        settings = Settings(data_dir=tmp_path / "accounts-data", issuer=issuer)
        platform = build_platform(settings, ["accounts"])
        app = platform.create_app()
        await platform.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as local:
                listed = await local.get("/api/v1/admin/accounts", headers=bearer)
                assert listed.status_code == 200, listed.text
                forged = bearer["Authorization"][:-4] + "AAAA"
                denied = await local.get(
                    "/api/v1/admin/accounts", headers={"Authorization": forged}
                )
                assert denied.status_code == 401
        finally:
            await platform.stop()
    finally:
        stop_platform(identity)
