"""The FastAPI guards, exercised through HTTP on a tiny app."""

# No `from __future__ import annotations`: the routes are declared inside make_app() with a local
# `auth`, and FastAPI must evaluate their Annotated[..., Depends(auth...)] at definition time.

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from mercato.platform.auth import (
    MemoryRevocationStore,
    Principal,
    StaticKeySource,
    TokenVerifier,
    generate_signing_key,
    issue_access_token,
    jwks,
)
from mercato.platform.auth.deps import Authenticator
from mercato.platform.http_errors import install_error_handlers

ISSUER = "https://id.mercato.test"
AUDIENCE = "mercato"
KEY = generate_signing_key()


def token(*, roles: list[str] | None = None, scopes: tuple[str, ...] = ()) -> str:
    value, _ = issue_access_token(
        KEY,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="someone",
        client_id="web" if roles is not None else "robot",
        scopes=scopes,
        roles=roles,
        lifetime_seconds=300,
    )
    return value


def bearer(value: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {value}"}


USER = token(roles=["user"])
ADMIN = token(roles=["user", "admin"])
MACHINE = token(roles=None, scopes=("catalog.read",))
MACHINE_ADMIN = token(roles=None, scopes=("mercato.admin",))


def make_app() -> FastAPI:
    verifier = TokenVerifier(
        StaticKeySource(lambda: jwks([KEY])),
        MemoryRevocationStore(),
        issuer=ISSUER,
        audience=AUDIENCE,
    )
    auth = Authenticator(verifier)
    app = FastAPI()
    install_error_handlers(app)

    def who(p: Principal) -> dict[str, Any]:
        return {"sub": p.sub, "machine": p.is_machine, "admin": p.is_admin}

    @app.get("/me")
    async def me(p: Annotated[Principal, Depends(auth.current)]) -> dict[str, Any]:
        return who(p)

    @app.get("/maybe")
    async def maybe(p: Annotated[Principal | None, Depends(auth.optional)]) -> dict[str, Any]:
        return {"anonymous": p is None}

    @app.get("/person")
    async def person(p: Annotated[Principal, Depends(auth.require_person)]) -> dict[str, Any]:
        return who(p)

    @app.get("/admin")
    async def admin(p: Annotated[Principal, Depends(auth.require_admin)]) -> dict[str, Any]:
        return who(p)

    @app.get("/export")
    async def export(
        p: Annotated[Principal, Depends(auth.require_scope("catalog.read"))],
    ) -> dict[str, Any]:
        return who(p)

    @app.get("/role-admin")
    async def role_admin(
        p: Annotated[Principal, Depends(auth.require_role("admin"))],
    ) -> dict[str, Any]:
        return who(p)

    @app.get("/role-user")
    async def role_user(
        p: Annotated[Principal, Depends(auth.require_role("user"))],
    ) -> dict[str, Any]:
        return who(p)

    @app.get("/both")
    async def both(
        a: Annotated[Principal, Depends(auth.require_user)],
        b: Annotated[Principal, Depends(auth.require_admin_or_scope("catalog.read"))],
    ) -> dict[str, Any]:
        return {"same": a is b}

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_401_without_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 401


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Token abc"])
async def test_401_with_another_scheme_or_empty_token(
    client: httpx.AsyncClient, header: str
) -> None:
    response = await client.get("/me", headers={"Authorization": header})
    assert response.status_code == 401


async def test_401_with_invalid_token_never_echoes_it(client: httpx.AsyncClient) -> None:
    forged = USER[:-4] + "AAAA"
    response = await client.get("/me", headers=bearer(forged))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert forged not in response.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient, scheme: str) -> None:
    response = await client.get("/me", headers=bearer(USER, scheme))
    assert response.status_code == 200
    assert response.json() == {"sub": "someone", "machine": False, "admin": False}


async def test_optional_is_none_without_token_but_401_with_a_bad_one(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/maybe")).json() == {"anonymous": True}
    assert (await client.get("/maybe", headers=bearer(USER))).json() == {"anonymous": False}
    assert (await client.get("/maybe", headers=bearer("nope"))).status_code == 401


async def test_user_gets_403_on_admin_route(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin")).status_code == 401
    response = await client.get("/admin", headers=bearer(USER))
    assert response.status_code == 403
    assert response.json()["detail"] == "admin rights required"


async def test_admin_is_let_in(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin", headers=bearer(ADMIN))
    assert response.status_code == 200
    assert response.json()["admin"] is True


async def test_machine_token_without_admin_scope_is_refused_admin(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/admin", headers=bearer(MACHINE))).status_code == 403


async def test_machine_token_with_admin_scope_is_admin(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin", headers=bearer(MACHINE_ADMIN))
    assert response.status_code == 200
    assert response.json() == {"sub": "someone", "machine": True, "admin": True}


async def test_person_route_refuses_machines(client: httpx.AsyncClient) -> None:
    assert (await client.get("/person", headers=bearer(USER))).status_code == 200
    assert (await client.get("/person", headers=bearer(MACHINE_ADMIN))).status_code == 403


async def test_scope_route(client: httpx.AsyncClient) -> None:
    assert (await client.get("/export", headers=bearer(MACHINE))).status_code == 200
    assert (await client.get("/export", headers=bearer(ADMIN))).status_code == 200
    assert (await client.get("/export", headers=bearer(MACHINE_ADMIN))).status_code == 200
    response = await client.get("/export", headers=bearer(USER))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert (await client.get("/export")).status_code == 401


async def test_require_role(client: httpx.AsyncClient) -> None:
    assert (await client.get("/role-admin")).status_code == 401
    assert (await client.get("/role-admin", headers=bearer(USER))).status_code == 403
    assert (await client.get("/role-admin", headers=bearer(ADMIN))).status_code == 200
    # mercato.admin counts as admin for machines (DESIGN §2).
    assert (await client.get("/role-admin", headers=bearer(MACHINE_ADMIN))).status_code == 200
    assert (await client.get("/role-admin", headers=bearer(MACHINE))).status_code == 403
    assert (await client.get("/role-user", headers=bearer(USER))).status_code == 200
    assert (await client.get("/role-user", headers=bearer(MACHINE_ADMIN))).status_code == 403


async def test_guards_share_one_verification_per_request(client: httpx.AsyncClient) -> None:
    response = await client.get("/both", headers=bearer(MACHINE))
    assert response.json() == {"same": True}


async def test_openapi_declares_the_bearer_scheme(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from POST /api/v1/auth/login or POST /oauth/token.",
    }
    assert schema["paths"]["/admin"]["get"]["security"] == [{"bearer": []}]
