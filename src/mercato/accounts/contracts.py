"""What other services may know of accounts: its events (DESIGN §1, §3).

Every user event carries the user's whole current state and a `version` that grows by one with
each change, so a consumer can apply them idempotently and ignore one older than what it has.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from mercato.platform.events import EventPayload

UserStatus = Literal["active", "disabled"]
Role = Literal["admin", "user"]
ROLES: tuple[Role, ...] = ("admin", "user")


class UserCreated(EventPayload):
    """A user registered (or was provisioned, like the bootstrap admin)."""

    event_type: ClassVar[str] = "user.created"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password_hash"})

    user_id: str
    username: str
    email: str
    display_name: str | None = None
    roles: list[Role]
    status: UserStatus = "active"
    # argon2id PHC string, so identity can authenticate without calling accounts.
    password_hash: str
    version: int = 1
    occurred_at: datetime


class UserUpdated(EventPayload):
    """A user's profile, credentials, roles or status changed; the whole new state."""

    event_type: ClassVar[str] = "user.updated"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password_hash"})

    user_id: str
    username: str
    email: str
    display_name: str | None = None
    roles: list[Role]
    status: UserStatus = "active"
    password_hash: str
    version: int
    # Which fields changed, for consumers that care (identity revokes sessions on a password
    # change); the state above is complete either way.
    changed: list[str] = []
    occurred_at: datetime


class UserDeleted(EventPayload):
    """A user deleted their account (or an admin did)."""

    event_type: ClassVar[str] = "user.deleted"

    user_id: str
    version: int
    occurred_at: datetime
