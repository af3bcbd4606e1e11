"""Identity's JSON API for people and admins (DESIGN §2): login, refresh, logout, me, clients,
key rotation."""

# No `from __future__ import annotations`: the routes use local Annotated aliases that FastAPI
# must resolve when they are declared.

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from mercato.identity import clients, service
from mercato.identity.domain import WEB_CLIENT_ID, Client
from mercato.identity.tokens import IdentityDeps, IssuedTokens
from mercato.platform.auth import Principal
from mercato.platform.net import client_address
from mercato.platform.openapi import json_examples
from mercato.platform.pagination import Page, PageDep
from mercato.platform.service import ServiceContext

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class LoginIn(BaseModel):
    """A login form."""

    model_config = ConfigDict(extra="forbid")

    username_or_email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    remember_me: bool = False


class RefreshIn(BaseModel):
    """A refresh token to spend."""

    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutIn(BaseModel):
    """Optionally, the refresh token of the session to end as well."""

    model_config = ConfigDict(extra="forbid")

    refresh_token: str | None = Field(default=None, max_length=512)


class TokenPair(BaseModel):
    """Tokens of a session."""

    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int

    @classmethod
    def of(cls, issued: IssuedTokens) -> "TokenPair":
        """The answer for issued tokens (a session always has a refresh token)."""
        assert issued.refresh_token is not None
        return cls(
            access_token=issued.access_token,
            refresh_token=issued.refresh_token,
            expires_in=issued.expires_in,
        )


class Me(BaseModel):
    """Who the token says the caller is."""

    sub: str
    username: str | None = None
    email: str | None = None
    roles: list[str]
    scopes: list[str]
    client_id: str | None = None


class ClientIn(BaseModel):
    """A client registration."""

    model_config = ConfigDict(extra="forbid")

    client_id: str | None = Field(default=None, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(max_length=50)
    token_budget_per_hour: int | None = Field(default=None, ge=1, le=10_000_000)
    grant_types: list[str] = Field(default=["client_credentials"], min_length=1, max_length=3)


class ClientOut(BaseModel):
    """A registered client (never its secret)."""

    client_id: str
    name: str
    scopes: list[str]
    grant_types: list[str]
    token_budget_per_hour: int | None
    created_at: datetime

    @classmethod
    def of(cls, client: Client) -> "ClientOut":
        """The public view of a client."""
        return cls(
            client_id=client.client_id,
            name=client.name,
            scopes=list(client.scopes),
            grant_types=list(client.grant_types),
            token_budget_per_hour=client.token_budget_per_hour,
            created_at=client.created_at,
        )


class ClientCreated(ClientOut):
    """A client just registered, with its secret: shown this once."""

    client_secret: str


class RotatedKey(BaseModel):
    """The new signing key and every key published now."""

    kid: str
    alg: str
    published: list[str]


def build_router(ctx: ServiceContext[IdentityDeps]) -> APIRouter:
    """People's and admins' identity routes, bound to this service's context."""
    router = APIRouter(tags=["identity"])
    Person = Annotated[Principal, Depends(ctx.auth.require_person)]
    Caller = Annotated[Principal, Depends(ctx.auth.require_user)]
    Admin = Annotated[Principal, Depends(ctx.auth.require_admin)]

    def deps() -> IdentityDeps:
        return ctx.deps

    Deps = Annotated[IdentityDeps, Depends(deps)]

    @router.post(
        "/api/v1/auth/login",
        openapi_extra=json_examples(
            by_username={"username_or_email": "jane", "password": "Correct-Horse-9"},
            by_email_remembered={
                "username_or_email": "jane@example.com",
                "password": "Correct-Horse-9",
                "remember_me": True,
            },
        ),
    )
    async def login(form: LoginIn, request: Request, response: Response, d: Deps) -> TokenPair:
        """Log in with a username or e-mail; 401 on bad credentials, 429 while throttled."""
        attempt = service.LoginAttempt(
            identifier=form.username_or_email,
            password=form.password,
            remember_me=form.remember_me,
            address=client_address(request),
        )
        response.headers.update(NO_STORE)
        return TokenPair.of(await service.login(d, attempt))

    @router.post("/api/v1/auth/refresh")
    async def refresh(form: RefreshIn, response: Response, d: Deps) -> TokenPair:
        """Spend a refresh token for a new pair; a spent one revokes its whole session."""
        response.headers.update(NO_STORE)
        return TokenPair.of(await service.refresh(d, form.refresh_token, WEB_CLIENT_ID))

    @router.post("/api/v1/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
    async def logout(
        caller: Person, d: Deps, form: Annotated[LogoutIn | None, Body()] = None
    ) -> Response:
        """Revoke the caller's access token and session everywhere."""
        await service.logout(d, caller, form.refresh_token if form else None)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get("/api/v1/auth/me")
    async def me(caller: Caller) -> Me:
        """The caller as their token describes them (a person or a machine)."""
        return Me(
            sub=caller.sub,
            username=caller.username,
            email=caller.email,
            roles=sorted(caller.roles),
            scopes=sorted(caller.scopes),
            client_id=caller.client_id,
        )

    @router.post("/api/v1/admin/clients", status_code=status.HTTP_201_CREATED)
    async def register_client(
        _: Admin, form: ClientIn, response: Response, d: Deps
    ) -> ClientCreated:
        """Register a machine client; its secret is in this answer and nowhere else."""
        client, secret = await clients.register_client(
            d,
            clients.ClientForm(
                name=form.name,
                scopes=form.scopes,
                client_id=form.client_id,
                token_budget_per_hour=form.token_budget_per_hour,
                grant_types=form.grant_types,
            ),
        )
        response.headers.update(NO_STORE)
        return ClientCreated(**ClientOut.of(client).model_dump(), client_secret=secret)

    @router.get("/api/v1/admin/clients")
    async def list_clients(_: Admin, page: PageDep, d: Deps) -> Page[ClientOut]:
        """Registered clients, oldest first."""
        items, total = await clients.list_clients(d, page.skip, page.limit)
        return Page(
            items=[ClientOut.of(c) for c in items], total=total, skip=page.skip, limit=page.limit
        )

    @router.delete("/api/v1/admin/clients/{client_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_client(_: Admin, client_id: str, d: Deps) -> Response:
        """Remove a client; its sessions end."""
        await clients.delete_client(d, client_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post("/api/v1/admin/keys/rotate")
    async def rotate_key(_: Admin, d: Deps) -> RotatedKey:
        """A new signing key; the previous one keeps verifying until its tokens expire."""
        kid = await d.keyring.rotate()
        published = [key["kid"] for key in d.keyring.jwks()["keys"]]
        return RotatedKey(kid=kid, alg=d.keyring.alg, published=published)

    return router
