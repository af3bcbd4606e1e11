"""Identity's consumers: the credential replica kept from accounts' `user.*` events."""

from __future__ import annotations

import structlog

from mercato.accounts.contracts import UserCreated, UserDeleted, UserUpdated
from mercato.identity.domain import Credential, release_keys, replicate, tombstone
from mercato.identity.store import CredentialRepository
from mercato.identity.tokens import IdentityDeps, cut_off_person, end_user_sessions
from mercato.platform.uow import UnitOfWork

log = structlog.get_logger("mercato.identity")


async def apply_user_state(deps: IdentityDeps, uow: UnitOfWork, incoming: Credential) -> bool:
    """Store a user's state unless an equal or newer version is stored; answers whether it was.

    A username or e-mail another user's replica still holds (its release is an event not yet
    applied) is settled by `release_keys`, so out-of-order events never wedge the consumer.
    """
    repo = uow.repository(CredentialRepository)
    current = await repo.get(incoming.user_id)
    change = replicate(current, incoming)
    if not change.apply:
        return False
    state = change.state
    for holder in await repo.holders(state):
        settled, state = release_keys(holder, state)
        if settled != holder:
            await repo.save(settled)
    await repo.save(state)
    if current is not None and _ends_tokens(current, state):
        # Accounts wrote this cut-off to the shared store when it answered; recording it here
        # lets a restart (or a flushed Redis) get it back.
        await cut_off_person(deps, uow, state.user_id, state.changed_at)
    if change.end_sessions:
        reason = "user_deleted" if state.status == "deleted" else "credentials_changed"
        ended = await end_user_sessions(deps, uow, state.user_id, reason)
        log.info("sessions ended", user_id=state.user_id, reason=reason, families=len(ended))
    return True


def _ends_tokens(before: Credential, after: Credential) -> bool:
    # What a token carries or presumes (roles, an account that may log in, the password it was
    # obtained with) changed: tokens issued before must stop working.
    return (
        set(before.roles) != set(after.roles)
        or before.status != after.status
        or before.password_hash != after.password_hash
    )


def _credential(event: UserCreated | UserUpdated) -> Credential:
    # Both events carry the user's whole state, so both become the same replica row.
    return Credential(
        user_id=event.user_id,
        username=event.username,
        email=event.email,
        password_hash=event.password_hash,
        roles=tuple(event.roles),
        status=event.status,
        version=event.version,
        changed_at=event.occurred_at,
    )


async def user_created(uow: UnitOfWork, event: UserCreated, *, deps: IdentityDeps) -> None:
    """A new user: add their credentials."""
    await apply_user_state(deps, uow, _credential(event))


async def user_updated(uow: UnitOfWork, event: UserUpdated, *, deps: IdentityDeps) -> None:
    """A changed user: replace their credentials with the event's full state."""
    await apply_user_state(deps, uow, _credential(event))


async def user_deleted(uow: UnitOfWork, event: UserDeleted, *, deps: IdentityDeps) -> None:
    """A deleted user: keep only a tombstone (its version stops older events reviving it)."""
    await apply_user_state(deps, uow, tombstone(event.user_id, event.version, event.occurred_at))
