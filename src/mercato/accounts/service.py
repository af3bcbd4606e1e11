"""Accounts' use cases: each runs in one unit of work and emits its event through the outbox."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from mercato.accounts.contracts import UserCreated, UserDeleted, UserStatus, UserUpdated
from mercato.accounts.domain import (
    DEFAULT_THROTTLE,
    ProfileChange,
    ThrottlePolicy,
    User,
    apply_change,
    check_password,
    check_roles,
    needs_current_password,
    normalize_email,
    normalize_username,
    username_skeleton,
)
from mercato.accounts.store import PasswordThrottle, Taken, UserRepository
from mercato.platform.clock import utcnow
from mercato.platform.errors import (
    Conflict,
    Invalid,
    NotFound,
    RuleBroken,
    TooManyRequests,
    Unauthorized,
)
from mercato.platform.ids import new_id_str
from mercato.platform.uow import UnitOfWork, UnitOfWorkFactory

log = structlog.get_logger("mercato.accounts")

PasswordHasher = Callable[[str], Awaitable[str]]
PasswordChecker = Callable[[str | None, str], Awaitable[bool]]
# Refuses every token of a person issued before the given time (on every replica at once).
TokenCutOff = Callable[[str, datetime], Awaitable[None]]

# Changes that end a person's earlier tokens: what a token carries (roles) or presumes (an
# account that may log in, the password it was obtained with).
_ENDS_TOKENS = frozenset({"roles", "status", "password"})


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


def _conflict(exc: Taken) -> Conflict:
    return Conflict(
        f"{exc.field} {exc.reason}",
        errors=[{"loc": ["body", exc.field], "msg": exc.reason, "type": "conflict"}],
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
        raise Invalid.of(exc) from None
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
        username_skeleton=username_skeleton(username),
    )


async def _add_user(uow: UnitOfWork, user: User) -> None:
    try:
        await uow.repository(UserRepository).add(user)
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
        user = await uow.repository(UserRepository).get(user_id)
    if user is None:
        raise NotFound("no such account")
    return user


async def update_profile(
    uow_factory: UnitOfWorkFactory,
    hash_password: PasswordHasher,
    check: PasswordChecker,
    user_id: str,
    update: ProfileUpdate,
    cut_off: TokenCutOff | None = None,
    throttle: ThrottlePolicy | None = None,
) -> User:
    """Change the caller's own profile (and end the caller's earlier tokens through `cut_off`
    when the password changes).

    A new e-mail, username or password needs `current_password`: 422 when it is missing, 401
    when it is wrong; wrong answers are throttled per account by `throttle` (429 with the
    seconds to wait once past the free ones). A display name alone needs nothing.
    """
    try:
        change = ProfileChange(
            display_name=update.display_name.strip() if update.display_name else None,
            clear_display_name=update.display_name == "",
            username=normalize_username(update.username)[0] if update.username else None,
            email=normalize_email(update.email)[0] if update.email else None,
        )
    except RuleBroken as exc:
        raise Invalid.of(exc) from None
    current = await get_user(uow_factory, user_id)
    if not needs_current_password(current, change, new_password=update.password is not None):
        return await _change(uow_factory, user_id, change, cut_off)
    try:
        if update.password is not None:
            check_password(update.password, username=change.username or current.username)
        if not update.current_password:
            raise RuleBroken(
                "current_password", "is required to change the e-mail, username or password"
            )
    except RuleBroken as exc:
        raise Invalid.of(exc) from None
    await _prove_current_password(
        uow_factory, check, current, update.current_password, throttle or DEFAULT_THROTTLE
    )
    if update.password is not None:
        change = replace(change, password_hash=await hash_password(update.password))
    return await _change(uow_factory, user_id, change, cut_off)


class WrongPassword(Unauthorized):
    """The `current_password` given to confirm a profile change is not the account's."""

    type_slug = "wrong-current-password"


async def _prove_current_password(
    uow_factory: UnitOfWorkFactory,
    check: PasswordChecker,
    user: User,
    password: str,
    throttle: ThrottlePolicy,
) -> None:
    """Check the caller's current password like a login: 429 while the account is locked out,
    401 when wrong. The attempt is counted before the (slow) check and forgotten when it
    proves right, so a burst of concurrent guesses cannot all slip in before the first counts.
    """
    async with uow_factory() as uow:
        wait = await PasswordThrottle(uow.connection).count_failure(user.id, throttle, time.time())
    if wait > 0:
        log.warning("current password check throttled", user_id=user.id)
        raise TooManyRequests("too many wrong current passwords; try again later", math.ceil(wait))
    if not await check(user.password_hash, password):
        log.info("current password wrong", user_id=user.id)
        raise WrongPassword("current_password is wrong")
    async with uow_factory() as uow:
        await PasswordThrottle(uow.connection).clear(user.id)


async def set_roles(
    uow_factory: UnitOfWorkFactory,
    user_id: str,
    roles: list[str],
    cut_off: TokenCutOff | None = None,
) -> User:
    """An admin sets a user's roles (`user` is always kept); a change ends the user's earlier
    tokens through `cut_off` before this returns."""
    try:
        chosen = check_roles(roles)
    except RuleBroken as exc:
        raise Invalid.of(exc) from None
    return await _change(uow_factory, user_id, ProfileChange(roles=chosen), cut_off)


async def set_status(
    uow_factory: UnitOfWorkFactory,
    user_id: str,
    status: UserStatus,
    cut_off: TokenCutOff | None = None,
) -> User:
    """An admin disables or re-enables a user (a no-op when it already has that status); a
    change ends the user's earlier tokens through `cut_off` before this returns."""
    return await _change(uow_factory, user_id, ProfileChange(status=status), cut_off)


async def _change(
    uow_factory: UnitOfWorkFactory,
    user_id: str,
    change: ProfileChange,
    cut_off: TokenCutOff | None = None,
) -> User:
    async with uow_factory() as uow:
        repo = uow.repository(UserRepository)
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
    # After the commit (a change that did not happen must not lock the person out), before the
    # answer: identity applies the event a moment later, and the caller of this change must
    # not be able to use an earlier token in between.
    if cut_off is not None and _ENDS_TOKENS.intersection(changed):
        await cut_off(user_id, updated.updated_at)
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


async def delete_account(
    uow_factory: UnitOfWorkFactory, user_id: str, cut_off: TokenCutOff | None = None
) -> None:
    """Delete the caller's account, emit `user.deleted` and end its tokens through `cut_off`."""
    now = utcnow()  # the event's time is the cut-off identity records too
    async with uow_factory() as uow:
        repo = uow.repository(UserRepository)
        user = await repo.get(user_id)
        if user is None:
            raise NotFound("no such account")
        await repo.delete(user_id)
        await uow.emit(
            UserDeleted(user_id=user_id, version=user.version + 1, occurred_at=now),
            subject=user_id,
        )
    if cut_off is not None:
        await cut_off(user_id, now)
    log.info("user deleted", user_id=user_id)


async def list_users(
    uow_factory: UnitOfWorkFactory, skip: int, limit: int
) -> tuple[list[User], int]:
    """A page of users."""
    async with uow_factory() as uow:
        return await uow.repository(UserRepository).page(skip, limit)


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
        if await uow.repository(UserRepository).bootstrap_value("admin") is not None:
            return False
    form = Registration(
        admin.username, admin.email, admin.password, admin.password, "Administrator"
    )
    user = await _new_user(hash_password, form, ["admin", "user"])
    async with uow_factory() as uow:
        if not await uow.repository(UserRepository).claim_bootstrap("admin", user.id):
            return False  # another replica provisioned it a moment ago
        await _add_user(uow, user)
    if admin.generated:
        write_credentials(admin)
    log.info("bootstrap admin created", user_id=user.id, username=admin.username)
    return True
