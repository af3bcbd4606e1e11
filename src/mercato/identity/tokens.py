"""What every identity use case shares: its dependencies, minting tokens, revoking them."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mercato.identity.budget import Budget
from mercato.identity.cache import ClientCache
from mercato.identity.contracts import TokenRevoked
from mercato.identity.domain import Client, Credential, RefreshFamily, digest, new_secret
from mercato.identity.keyring import Keyring, ReadFactory
from mercato.identity.sessions_store import RevocationRepository, SessionRepository
from mercato.identity.settings import IdentitySettings
from mercato.identity.subject_store import SubjectCutOffRepository
from mercato.platform.auth import RevocationStore, TokenVerifier, issue_access_token
from mercato.platform.auth.revocation import cut_off_ms
from mercato.platform.clock import utcnow
from mercato.platform.errors import DomainError
from mercato.platform.uow import UnitOfWork, UnitOfWorkFactory

PasswordChecker = Callable[[str | None, str], Awaitable[bool]]

# How long a new token may wait for the second after a person's cut-off (see `mint_person`);
# more than a second means the clocks of accounts and identity disagree.
MAX_CUT_OFF_WAIT_SECONDS = 1.5
CUT_OFF_WAIT_MARGIN_SECONDS = 0.01


class NotYetApplied(DomainError):
    """A person's change is cut off in the shared store but not yet in identity's replica."""

    status = 503
    type_slug = "service-unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retry_after=1)


@dataclass
class IdentityDeps:
    """The collaborators of identity's use cases, built once per process by the module."""

    uow: UnitOfWorkFactory
    # A read-only transaction that never waits for writers (lookups on hot paths).
    read: ReadFactory
    keyring: Keyring
    revocations: RevocationStore
    budget: Budget
    clients: ClientCache
    settings: IdentitySettings
    issuer: str
    audience: str
    check_password: PasswordChecker
    verifier: TokenVerifier


@dataclass(frozen=True)
class IssuedTokens:
    """A token answer; `repr` shows neither token."""

    access_token: str = field(repr=False)
    expires_in: int
    scope: str
    refresh_token: str | None = field(default=None, repr=False)


async def mint_person(
    deps: IdentityDeps, user: Credential, client_id: str, scopes: Iterable[str]
) -> tuple[str, dict[str, object]]:
    """A person's access token: roles, username and e-mail from the replica.

    Never a token the person's cut-off refuses, nor one from a replica older than the cut-off
    (accounts writes it before identity has applied the change: a token minted in between
    would carry the old roles); 503 with `Retry-After` then.
    """
    await _clear_of_cut_off(deps, user)
    token, claims = issue_access_token(
        await deps.keyring.signing_key(),
        issuer=deps.issuer,
        audience=deps.audience,
        subject=user.user_id,
        client_id=client_id,
        scopes=scopes,
        roles=user.roles,
        lifetime_seconds=deps.settings.identity_person_token_seconds,
        extra_claims={"username": user.username, "email": user.email},
    )
    return token, claims


async def _clear_of_cut_off(deps: IdentityDeps, user: Credential) -> None:
    cut_off = await deps.revocations.subject_cut_off(user.user_id)
    if cut_off is None:
        return
    if cut_off_ms(user.changed_at) < cut_off:
        raise NotYetApplied("the account changed a moment ago; try again shortly")
    # `iat` is whole seconds and the cut-off refuses every `iat` of its own second (it cannot
    # tell earlier tokens of that second from later ones): wait for the next second, so the
    # token signed now is one the cut-off lets through. This happens once per change, to the
    # person who just changed; the caller's transaction stays open meanwhile (under a second).
    wait = math.ceil(cut_off / 1000) - utcnow().timestamp()
    if wait > MAX_CUT_OFF_WAIT_SECONDS:
        raise NotYetApplied("the account changed a moment ago; try again shortly")
    if wait > 0:
        # With a margin: the event loop may fire a timer up to its clock resolution early.
        await asyncio.sleep(wait + CUT_OFF_WAIT_MARGIN_SECONDS)


async def mint_machine(
    deps: IdentityDeps, client: Client, scopes: Iterable[str]
) -> tuple[str, dict[str, object]]:
    """A machine's access token (client credentials): no roles, `sub` is the client id."""
    return issue_access_token(
        await deps.keyring.signing_key(),
        issuer=deps.issuer,
        audience=deps.audience,
        subject=client.client_id,
        client_id=client.client_id,
        scopes=scopes,
        roles=None,
        lifetime_seconds=deps.settings.identity_machine_token_seconds,
    )


def refresh_lifetime(deps: IdentityDeps, remember_me: bool) -> timedelta:
    """14 days, or 30 with remember me (configurable)."""
    days = (
        deps.settings.identity_remember_me_refresh_days
        if remember_me
        else deps.settings.identity_refresh_days
    )
    return timedelta(days=days)


async def issue_in_family(
    deps: IdentityDeps, uow: UnitOfWork, family: RefreshFamily, user: Credential, now: datetime
) -> IssuedTokens:
    """A new access token and refresh token in `family` (the family row exists)."""
    sessions = uow.repository(SessionRepository)
    refresh = new_secret()
    await sessions.add_refresh(
        digest(refresh), family.id, now, now + refresh_lifetime(deps, family.remember_me)
    )
    access, claims = await mint_person(deps, user, family.client_id, family.scopes)
    await sessions.add_access(str(claims["jti"]), family.id, user.user_id, int(str(claims["exp"])))
    return IssuedTokens(
        access_token=access,
        expires_in=deps.settings.identity_person_token_seconds,
        scope=" ".join(family.scopes),
        refresh_token=refresh,
    )


async def revoke_access(
    deps: IdentityDeps,
    uow: UnitOfWork,
    tokens: Iterable[tuple[str, int]],
    *,
    reason: str,
    user_id: str | None = None,
    client_id: str | None = None,
) -> int:
    """Revoke access tokens (jti, exp) everywhere: the shared store every verifier reads, the
    table that outlives a restart, and a `token.revoked` event. Answers how many."""
    revocations = uow.repository(RevocationRepository)
    now = utcnow()
    count = 0
    for jti, expires_at in dict(tokens).items():
        await deps.revocations.revoke(jti, expires_at)
        await revocations.add(jti, expires_at, now)
        await uow.emit(
            TokenRevoked(
                jti=jti,
                expires_at=expires_at,
                user_id=user_id,
                client_id=client_id,
                reason=reason,
                occurred_at=now,
            ),
            subject=user_id or client_id or jti,
        )
        count += 1
    return count


async def end_families(
    deps: IdentityDeps,
    uow: UnitOfWork,
    family_ids: Iterable[str],
    *,
    reason: str,
    user_id: str | None = None,
) -> list[str]:
    """Revoke refresh families and every live access token issued in them."""
    sessions = uow.repository(SessionRepository)
    ids = list(dict.fromkeys(family_ids))
    revoked = await sessions.revoke_families(ids, reason, utcnow())
    live = await sessions.live_access(ids, int(utcnow().timestamp()))
    await revoke_access(deps, uow, live, reason=reason, user_id=user_id)
    return revoked


async def end_user_sessions(
    deps: IdentityDeps, uow: UnitOfWork, user_id: str, reason: str
) -> list[str]:
    """End every session of a user (password changed, disabled, deleted)."""
    families = await uow.repository(SessionRepository).families_of_user(user_id)
    return await end_families(deps, uow, families, reason=reason, user_id=user_id)


async def revoke_client_tokens(deps: IdentityDeps, uow: UnitOfWork, client_id: str) -> None:
    """Refuse every token issued to `client_id` so far, everywhere, until the longest-lived of
    them has expired (its jtis are not recorded, so the client itself is revoked)."""
    now = int(utcnow().timestamp())
    lifetime = max(
        deps.settings.identity_machine_token_seconds, deps.settings.identity_person_token_seconds
    )
    await uow.repository(RevocationRepository).add_client(client_id, now, now + lifetime)
    await deps.revocations.revoke_client(client_id, now, now + lifetime)


async def cut_off_person(
    deps: IdentityDeps, uow: UnitOfWork, user_id: str, changed_at: datetime
) -> int:
    """Refuse every token of `user_id` issued before `changed_at` (their roles, status or
    password changed, or they were deleted), everywhere and durably; answers the cut-off.

    Accounts already wrote the same cut-off to the shared store when it answered (both derive
    it from the change's time); this makes it outlive a restart of the shared store.
    """
    cut_off = cut_off_ms(changed_at)
    expires_at = math.ceil(cut_off / 1000) + deps.settings.identity_person_token_seconds
    await uow.repository(SubjectCutOffRepository).raise_to(user_id, cut_off, expires_at)
    await deps.revocations.revoke_subject(user_id, cut_off, expires_at)
    return cut_off


async def restore_revocations(deps: IdentityDeps) -> int:
    """Put the still-relevant revocations back in the shared store (after a restart)."""
    now = int(utcnow().timestamp())
    async with deps.read() as conn:
        repository = RevocationRepository(conn)
        live = await repository.live(now)
        clients = await repository.live_clients(now)
        subjects = await SubjectCutOffRepository(conn).live(now)
    for jti, expires_at in live:
        await deps.revocations.revoke(jti, expires_at)
    for client_id, issued_until, expires_at in clients:
        await deps.revocations.revoke_client(client_id, issued_until, expires_at)
    for subject, cut_off, expires_at in subjects:
        await deps.revocations.revoke_subject(subject, cut_off, expires_at)
    return len(live) + len(clients) + len(subjects)
