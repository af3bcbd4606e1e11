"""People's use cases: login (with throttling), refresh with rotation, logout."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import structlog

from mercato.identity.contracts import UserLoggedIn
from mercato.identity.domain import (
    WEB_CLIENT_ID,
    Credential,
    RefreshFamily,
    ThrottlePolicy,
    after_failure,
    digest,
    login_key,
    wait_left,
)
from mercato.identity.sessions_store import SessionRepository
from mercato.identity.store import CredentialRepository, ThrottleRepository
from mercato.identity.tokens import (
    IdentityDeps,
    IssuedTokens,
    end_families,
    issue_in_family,
    revoke_access,
)
from mercato.platform.auth import Principal
from mercato.platform.clock import utcnow
from mercato.platform.errors import DomainError, TooManyRequests, Unauthorized
from mercato.platform.ids import new_id_str
from mercato.platform.passwords import HashingBusy

log = structlog.get_logger("mercato.identity")

BAD_CREDENTIALS = "invalid username/e-mail or password"


class GrantRefused(DomainError):
    """A refresh token (or password) was not accepted; OAuth answers it as `invalid_grant`."""

    status = 401
    type_slug = "invalid-grant"


@dataclass(frozen=True)
class LoginAttempt:
    """Who tries to log in, from where, and for which client and scopes."""

    identifier: str
    password: str
    remember_me: bool = False
    address: str = "unknown"
    client_id: str = WEB_CLIENT_ID
    scopes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        # Neither the password nor the login name (which may be a mistyped password).
        return f"LoginAttempt(client_id={self.client_id!r})"


def _policies(deps: IdentityDeps) -> tuple[ThrottlePolicy, ThrottlePolicy]:
    s = deps.settings
    account = ThrottlePolicy(
        free=s.identity_login_free_failures,
        base=s.identity_login_base_delay_seconds,
        maximum=s.identity_login_max_delay_seconds,
        forget_after=s.identity_login_forget_seconds,
    )
    address = ThrottlePolicy(
        free=s.identity_ip_free_failures,
        base=s.identity_login_base_delay_seconds,
        maximum=s.identity_login_max_delay_seconds,
        forget_after=s.identity_login_forget_seconds,
    )
    return account, address


async def _count_attempt(deps: IdentityDeps, account_key: str, address_key: str) -> float:
    """Check both throttle keys and count this attempt as a failure up front.

    Counting before the password is checked (and taking it back on success) means a burst of
    concurrent guesses cannot all pass the check before the first failure is recorded. Answers
    the seconds to wait when a key is locked (nothing is counted then).

    `claim` upserts and locks both rows first, so even the very first failures of a key are
    counted one after another: the lock decision is made on the count each attempt gets back.
    """
    account_policy, address_policy = _policies(deps)
    async with deps.uow() as uow:
        repo = uow.repository(ThrottleRepository)
        states = await repo.claim([account_key, address_key])
        # Read the clock once the rows are ours: an attempt that queued behind others must not
        # judge their lock (or the staleness of their count) by the time it arrived.
        now = time.time()
        wait = max(wait_left(states[k], now) for k in (account_key, address_key))
        if wait > 0:
            return wait
        await repo.put(account_key, after_failure(account_policy, states[account_key], now))
        await repo.put(address_key, after_failure(address_policy, states[address_key], now))
    return 0.0


async def _uncount_attempt(deps: IdentityDeps, account_key: str, address_key: str) -> None:
    """Take back what `_count_attempt` counted (its lock too, when it set one)."""
    async with deps.uow() as uow:
        repo = uow.repository(ThrottleRepository)
        await repo.uncount(account_key, deps.settings.identity_login_free_failures)
        await repo.uncount(address_key, deps.settings.identity_ip_free_failures)


async def authenticate_person(deps: IdentityDeps, attempt: LoginAttempt) -> Credential:
    """The user whose password this is; 429 while throttled, 401 otherwise (the same 401 and
    the same work for an unknown user as for a wrong password)."""
    key = login_key(attempt.identifier)
    async with deps.read() as conn:
        user = await CredentialRepository(conn).find_by_login(key) if key else None
    account_key = digest(f"account:user:{user.user_id}" if user else f"account:login:{key}")
    address_key = digest(f"address:{attempt.address}")
    wait = await _count_attempt(deps, account_key, address_key)
    if wait > 0:
        log.warning("login throttled", retry_after=math.ceil(wait))
        raise TooManyRequests("too many failed logins; try again later", math.ceil(wait))
    usable = user is not None and user.can_log_in
    try:
        ok = await deps.check_password(
            user.password_hash if usable and user else None, attempt.password
        )
    except HashingBusy:
        # Turned away before the password was looked at: this attempt guessed nothing, so it
        # must not count against the account (or lock it out).
        await _uncount_attempt(deps, account_key, address_key)
        raise
    if not ok or user is None:
        log.info("login failed", client_id=attempt.client_id)
        raise Unauthorized(BAD_CREDENTIALS)
    async with deps.uow() as uow:
        repo = uow.repository(ThrottleRepository)
        await repo.clear(account_key)
        await repo.uncount(address_key, deps.settings.identity_ip_free_failures)
    return user


async def login(deps: IdentityDeps, attempt: LoginAttempt) -> IssuedTokens:
    """Check a person's password and start a session: access and refresh token."""
    user = await authenticate_person(deps, attempt)
    now = utcnow()
    family = RefreshFamily(
        id=new_id_str(),
        user_id=user.user_id,
        client_id=attempt.client_id,
        scopes=attempt.scopes,
        remember_me=attempt.remember_me,
        revoked=False,
    )
    async with deps.uow() as uow:
        await uow.repository(SessionRepository).add_family(family, now)
        issued = await issue_in_family(deps, uow, family, user, now)
        await uow.emit(
            UserLoggedIn(user_id=user.user_id, client_id=attempt.client_id, occurred_at=now),
            subject=user.user_id,
        )
    log.info("login", user_id=user.user_id, client_id=attempt.client_id)
    return issued


async def refresh(deps: IdentityDeps, refresh_token: str, client_id: str) -> IssuedTokens:
    """Spend a refresh token for a new pair in its family.

    Spending is one conditional update, so of two concurrent refreshes with one token exactly
    one wins. A token presented again after it was spent means it leaked (or the client raced
    itself): the whole family is revoked, the winner's new tokens included.
    """
    token_hash = digest(refresh_token)
    now = utcnow()
    issued: IssuedTokens | None = None
    reason = "invalid refresh token"
    async with deps.uow() as uow:
        sessions = uow.repository(SessionRepository)
        record = await sessions.find_refresh(token_hash)
        if record is None or record.family.client_id != client_id:
            pass
        elif record.family.revoked or now >= record.expires_at:
            reason = "refresh token expired or revoked"
        elif not await sessions.spend(token_hash, now):
            reason = "refresh token already used; the session is revoked"
            await end_families(
                deps, uow, [record.family.id], reason="refresh_reuse", user_id=record.family.user_id
            )
            log.warning("refresh token reused", family_id=record.family.id)
        else:
            user = await uow.repository(CredentialRepository).get(record.family.user_id)
            if user is None or not user.can_log_in:
                await end_families(
                    deps, uow, [record.family.id], reason="user_gone", user_id=record.family.user_id
                )
            else:
                issued = await issue_in_family(deps, uow, record.family, user, now)
    # Raised only after the commit: the family's revocation must stick.
    if issued is None:
        raise GrantRefused(reason)
    return issued


async def logout(deps: IdentityDeps, caller: Principal, refresh_token: str | None) -> int:
    """Revoke the caller's access token and its refresh family (and the family of
    `refresh_token` when it is the caller's); answers how many access tokens were revoked."""
    async with deps.uow() as uow:
        sessions = uow.repository(SessionRepository)
        families: list[str] = []
        family_id = await sessions.family_of_access(caller.jti)
        if family_id is not None:
            families.append(family_id)
        if refresh_token:
            record = await sessions.find_refresh(digest(refresh_token))
            if record is not None and record.family.user_id == caller.sub:
                families.append(record.family.id)
        await sessions.revoke_families(families, "logout", utcnow())
        live = dict(await sessions.live_access(families, int(time.time())))
        live[caller.jti] = caller.expires_at
        count = await revoke_access(
            deps,
            uow,
            live.items(),
            reason="logout",
            user_id=caller.sub,
            client_id=caller.client_id,
        )
    log.info("logout", user_id=caller.sub, families=len(families))
    return count
