"""What other services may know of identity: its events and the exporter client's identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from mercato.platform.events import EventPayload

# The machine client the export job uses (DESIGN §6), provisioned by identity on first start.
EXPORTER_CLIENT_ID = "mercato-exporter"
EXPORTER_SCOPES = ("catalog.read",)


@dataclass(frozen=True)
class ExporterCredentials:
    """The exporter client's id and secret, handed over in-process on first start."""

    client_id: str
    client_secret: str = field(repr=False)


@dataclass
class ExporterHandover:
    """Where identity, running in this process, hands the exporter's credentials to
    integration (`SharedState.handovers.of(ExporterHandover)`), so integration keeps the
    secret without reading identity's tables. Empty until identity has provisioned them."""

    credentials: ExporterCredentials | None = None


class TokenRevoked(EventPayload):
    """An access token (by `jti`) was revoked before its expiry: refuse it everywhere."""

    event_type: ClassVar[str] = "token.revoked"

    jti: str
    # Epoch seconds of the token's own expiry: the revocation can be forgotten after it.
    expires_at: int
    user_id: str | None = None
    client_id: str | None = None
    reason: str = "logout"
    occurred_at: datetime


class UserLoggedIn(EventPayload):
    """A person logged in with a password."""

    event_type: ClassVar[str] = "user.logged_in"

    user_id: str
    client_id: str | None = None
    occurred_at: datetime
