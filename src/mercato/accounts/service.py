"""Accounts' use cases: each runs in one unit of work and emits its event through the outbox."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from mercato.accounts.contracts import UserCreated, UserDeleted, UserUpdated
from mercato.accounts.domain import (
    ProfileChange,
    RuleBroken,
    User,
    apply_change,
    check_password,
    check_roles,
    normalize_email,
    normalize_username,
)
from mercato.accounts.store import Taken, UserRepository
from mercato.platform.clock import utcnow
from mercato.platform.errors import Conflict, Invalid, NotFound, Unauthorized
from mercato.platform.ids import new_id_str
from mercato.platform.uow import UnitOfWork, UnitOfWorkFactory

log = structlog.get_logger("mercato.accounts")

PasswordHasher = Callable[[str], Awaitable[str]]
PasswordChecker = Callable[[str | None, str], Awaitable[bool]]


@dataclass(frozen=True)
class Registration:
    """What a newcomer submits."""

    username: str
    email: str
    password: str
    confirm_password: str
    display_name: str | None = None


@dataclass(frozen=True)
class ProfileUpdate:
    """What a user may change about themselves (None: unchanged)."""

    display_name: str | None = None
    email: str | None = None
    username: str | None = None
    password: str | None = None
    current_password: str | None = None


def _invalid(exc: RuleBroken) -> Invalid:
    return Invalid(
        f"{exc.field}: {exc.message}",
        errors=[{"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}],
    )


def _conflict(exc: Taken) -> Conflict:
    return Conflict(
        f"{exc.field} is already taken",
        errors=[{"loc": ["body", exc.field], "msg": "already taken", "type": "conflict"}],
    )


async def register(
    uow_factory: UnitOfWorkFactory,
    hash_password: PasswordHasher,
    form: Registration,
) -> User:
    """Create a user and emit `user.created` (with the argon2id hash, never the password)."""
    user = await _new_user(hash_password, form, ["user"])
    async with uow_factory() as uow:
        await _add_user(uow, user)
    log.info("user registered", user_id=user.id)
    return user


async def _new_user(hash_password: PasswordHasher, form: Registration, roles: list[str]) -> User:
    try:
        username, _ = normalize_username(form.username)
        email, _ = normalize_email(form.email)
        if form.password != form.confirm_password:
            raise RuleBroken("confirm_password", "does not match password")
        check_password(form.password, username=username)
        chosen_roles = check_roles(roles)
    except RuleBroken as exc:
        raise _invalid(exc) from None
    now = utcnow()
    return User(
        id=new_id_str(),
        username=username,
        email=email,
        display_name=(form.display_name or "").strip() or None,
        password_hash=await hash_password(form.password),
        roles=chosen_roles,
        status="active",
        version=1,
        created_at=now,
        updated_at=now,
    )


async def _add_user(uow: UnitOfWork, user: User) -> None:
    try:
        await UserRepository(uow.connection).add(user)
    except Taken as exc:
        raise _conflict(exc) from None
    await uow.emit(
        UserCreated(
            user_id=user.id,
            username=user.username,
            email=user.email,
            display_name=user.display_name,
            roles=user.roles,
            status=user.status,
            password_hash=user.password_hash,
            version=user.version,
            occurred_at=user.created_at,
        ),
        subject=user.id,
    )


async def get_user(uow_factory: UnitOfWorkFactory, user_id: str) -> User:
    """The user, or 404."""
    async with uow_factory() as uow:
        user = await UserRepository(uow.connection).get(user_id)
    if user is None:
        raise NotFound("no such account")
    return user


async def update_profile(
    uow_factory: UnitOfWorkFactory,
    hash_password: PasswordHasher,
    check: PasswordChecker,
    user_id: str,
    update: ProfileUpdate,
) -> User:
    """Change the caller's own profile; a new password needs the current one."""
    try:
        change = ProfileChange(
            display_name=update.display_name.strip() if update.display_name else None,
            clear_display_name=update.display_name == "",
            username=normalize_username(update.username)[0] if update.username else None,
            email=normalize_email(update.email)[0] if update.email else None,
        )
        if update.password is not None:
            check_password(update.password, username=change.username)
    except RuleBroken as exc:
        raise _invalid(exc) from None
    if update.password is not None:
        current = await get_user(uow_factory, user_id)
        if not update.current_password or not await check(
            current.password_hash, update.current_password
        ):
            raise Unauthorized("current_password is wrong or missing")
        change = ProfileChange(
            display_name=change.display_name,
            clear_display_name=change.clear_display_name,
            username=change.username,
            email=change.email,
            password_hash=await hash_password(update.password),
        )
    return await _change(uow_factory, user_id, change)


async def set_roles(uow_factory: UnitOfWorkFactory, user_id: str, roles: list[str]) -> User:
    """An admin sets a user's roles (`user` is always kept)."""
    try:
        chosen = check_roles(roles)
    except RuleBroken as exc:
        raise _invalid(exc) from None
    return await _change(uow_factory, user_id, ProfileChange(roles=chosen))


async def _change(uow_factory: UnitOfWorkFactory, user_id: str, change: ProfileChange) -> User:
    async with uow_factory() as uow:
        repo = UserRepository(uow.connection)
        user = await repo.get(user_id)
        if user is None:
            raise NotFound("no such account")
        now = utcnow()
        updated, changed = apply_change(user, change, now)
        if not changed:
            return user
        try:
            await repo.save(updated)
        except Taken as exc:
            raise _conflict(exc) from None
        await _emit_updated(uow, updated, changed)
    log.info("user updated", user_id=user_id, changed=changed)
    return updated


async def _emit_updated(uow: UnitOfWork, user: User, changed: list[str]) -> None:
    await uow.emit(
        UserUpdated(
            user_id=user.id,
            username=user.username,
            email=user.email,
            display_name=user.display_name,
            roles=user.roles,
            status=user.status,
            password_hash=user.password_hash,
            version=user.version,
            changed=changed,
            occurred_at=user.updated_at,
        ),
        subject=user.id,
    )


async def delete_account(uow_factory: UnitOfWorkFactory, user_id: str) -> None:
    """Delete the caller's account and emit `user.deleted`."""
    async with uow_factory() as uow:
        repo = UserRepository(uow.connection)
        user = await repo.get(user_id)
        if user is None:
            raise NotFound("no such account")
        await repo.delete(user_id)
        await uow.emit(
            UserDeleted(user_id=user_id, version=user.version + 1, occurred_at=utcnow()),
            subject=user_id,
        )
    log.info("user deleted", user_id=user_id)


async def list_users(
    uow_factory: UnitOfWorkFactory, skip: int, limit: int
) -> tuple[list[User], int]:
    """A page of users."""
    async with uow_factory() as uow:
        return await UserRepository(uow.connection).page(skip, limit)


@dataclass(frozen=True)
class AdminBootstrap:
    """The admin to provision on first start; `generated` when the password was made up here."""

    username: str
    email: str
    password: str
    generated: bool


def admin_to_provision(email: str | None, password: str | None) -> AdminBootstrap:
    """From `MERCATO_ADMIN_EMAIL` / `MERCATO_ADMIN_PASSWORD`, else a generated password."""
    if password:
        return AdminBootstrap("admin", email or "admin@mercato.example", password, False)
    # token_urlsafe mixes cases and digits, so it meets the password policy.
    generated = secrets.token_urlsafe(18) + "-A1"
    return AdminBootstrap("admin", email or "admin@mercato.example", generated, True)


async def bootstrap_admin(
    uow_factory: UnitOfWorkFactory,
    hash_password: PasswordHasher,
    admin: AdminBootstrap,
    write_credentials: Callable[[AdminBootstrap], None],
) -> bool:
    """Create the admin once (a restart changes nothing); answers whether it was created now.

    The user, its event and the "done" mark commit together, so a crash leaves either all or
    nothing, and two replicas starting at once create one admin (the mark's key collides).
    """
    async with uow_factory() as uow:
        if await UserRepository(uow.connection).bootstrap_value("admin") is not None:
            return False
    form = Registration(
        admin.username, admin.email, admin.password, admin.password, "Administrator"
    )
    user = await _new_user(hash_password, form, ["admin", "user"])
    async with uow_factory() as uow:
        if not await UserRepository(uow.connection).claim_bootstrap("admin", user.id):
            return False  # another replica provisioned it a moment ago
        await _add_user(uow, user)
    if admin.generated:
        write_credentials(admin)
    log.info("bootstrap admin created", user_id=user.id, username=admin.username)
    return True
