"""Accounts' HTTP API (DESIGN §2): parse, call a use case, shape the answer."""

import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from mercato.accounts import service
from mercato.accounts.contracts import Role, UserStatus
from mercato.accounts.domain import User
from mercato.accounts.registration_limit import build_registration_limit
from mercato.accounts.settings import AccountsSettings
from mercato.platform.auth import Principal
from mercato.platform.auth.revocation import cut_off_subject
from mercato.platform.net import client_address
from mercato.platform.openapi import json_examples
from mercato.platform.pagination import Page, PageDep
from mercato.platform.passwords import hash_password, verify_password
from mercato.platform.service import ServiceContext


class RegisterIn(BaseModel):
    """A registration form."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(max_length=200)
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    confirm_password: str = Field(max_length=1024)
    display_name: str | None = Field(default=None, max_length=200)


class ProfilePatch(BaseModel):
    """Fields to change; a new `email`, `username` or `password` needs `current_password`."""

    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    username: str | None = Field(default=None, max_length=200)
    password: str | None = Field(default=None, max_length=1024)
    current_password: str | None = Field(default=None, max_length=1024)


class RolesIn(BaseModel):
    """The roles a user should have (`user` is always kept)."""

    model_config = ConfigDict(extra="forbid")

    roles: list[str] = Field(max_length=10)


class StatusIn(BaseModel):
    """The status a user should have: `disabled` people cannot log in."""

    model_config = ConfigDict(extra="forbid")

    status: UserStatus


class Profile(BaseModel):
    """A user as answered by the API (never the password hash)."""

    id: str
    username: str
    email: str
    display_name: str | None
    roles: list[Role]
    status: UserStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> "Profile":
        """The public view of a user."""
        return cls(
            id=user.id,
            username=user.username,
            email=user.email,
            display_name=user.display_name,
            roles=user.roles,
            status=user.status,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


def build_router(ctx: ServiceContext[AccountsSettings]) -> APIRouter:
    """The accounts routes, bound to this service's context."""
    router = APIRouter(tags=["accounts"])
    Person = Annotated[Principal, Depends(ctx.auth.require_person)]
    Admin = Annotated[Principal, Depends(ctx.auth.require_admin)]

    async def cut_off(user_id: str, at: datetime) -> None:
        # The shared revocation store every verifier reads: earlier tokens stop at once.
        await cut_off_subject(ctx.shared.revocations, user_id, at)

    # Read once, at start (`MODULE.dependencies`): the registration limit and password throttle.
    settings = ctx.deps
    registration_limit = build_registration_limit(ctx, settings.accounts_register_per_minute)

    @router.post(
        "/api/v1/accounts/register",
        status_code=status.HTTP_201_CREATED,
        responses={
            429: {"description": "too many registrations from this address; see `Retry-After`"},
            503: {"description": "password hashing is saturated; see `Retry-After`"},
        },
        openapi_extra=json_examples(
            a_new_customer={
                "username": "jane",
                "email": "jane@example.com",
                "password": "Correct-Horse-9",
                "confirm_password": "Correct-Horse-9",
                "display_name": "Jane Doe",
            }
        ),
    )
    async def register(form: RegisterIn, request: Request) -> Profile:
        """Create an account; 409 when the username or e-mail is taken, 429 past the
        per-address limit, 503 while password hashing is saturated (both with `Retry-After`)."""
        await registration_limit.admit(client_address(request), time.time())
        user = await service.register(
            ctx.uow,
            hash_password,
            service.Registration(
                username=form.username,
                email=form.email,
                password=form.password,
                confirm_password=form.confirm_password,
                display_name=form.display_name,
            ),
        )
        return Profile.of(user)

    @router.get("/api/v1/accounts/me")
    async def me(caller: Person) -> Profile:
        """The caller's profile."""
        return Profile.of(await service.get_user(ctx.uow, caller.sub))

    password_throttle = settings.password_throttle()

    @router.patch(
        "/api/v1/accounts/me",
        responses={
            401: {"description": "`current_password` is wrong"},
            422: {"description": "invalid field, or `current_password` missing"},
            429: {"description": "too many wrong `current_password`s; see `Retry-After`"},
        },
    )
    async def update_me(caller: Person, patch: ProfilePatch) -> Profile:
        """Change the caller's profile (emits `user.updated`).

        A new `email`, `username` or `password` needs `current_password`: 422 when it is
        missing, 401 (problem type `wrong-current-password`) when wrong, 429 with
        `Retry-After` after too many wrong ones for the account. `display_name` needs none.
        """
        user = await service.update_profile(
            ctx.uow,
            hash_password,
            verify_password,
            caller.sub,
            service.ProfileUpdate(**patch.model_dump()),
            cut_off=cut_off,
            throttle=password_throttle,
        )
        return Profile.of(user)

    @router.delete("/api/v1/accounts/me", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_me(caller: Person) -> Response:
        """Delete the caller's account (emits `user.deleted`)."""
        await service.delete_account(ctx.uow, caller.sub, cut_off)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get("/api/v1/admin/accounts")
    async def list_accounts(_: Admin, page: PageDep) -> Page[Profile]:
        """Every account, oldest first."""
        users, total = await service.list_users(ctx.uow, page.skip, page.limit)
        return Page(
            items=[Profile.of(u) for u in users], total=total, skip=page.skip, limit=page.limit
        )

    @router.put("/api/v1/admin/accounts/{user_id}/roles")
    async def put_roles(_: Admin, user_id: str, body: RolesIn) -> Profile:
        """Set a user's roles (emits `user.updated`)."""
        return Profile.of(await service.set_roles(ctx.uow, user_id, body.roles, cut_off))

    @router.put(
        "/api/v1/admin/accounts/{user_id}/status",
        openapi_extra=json_examples(disable={"status": "disabled"}, enable={"status": "active"}),
    )
    async def put_status(_: Admin, user_id: str, body: StatusIn) -> Profile:
        """Disable or re-enable a user (emits `user.updated`); a change refuses every earlier
        token of the user at once, and a disabled user can no longer log in or refresh."""
        return Profile.of(await service.set_status(ctx.uow, user_id, body.status, cut_off))

    return router
