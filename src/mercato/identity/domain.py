"""Identity's rules: the credential replica, scopes, client secrets, refresh tokens, throttling.

No framework imports here (an import-linter contract keeps it so).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

# The throttle model is the platform's, named here as part of this service's rules.
from mercato.platform.errors import RuleBroken
from mercato.platform.throttle import ThrottlePolicy as ThrottlePolicy
from mercato.platform.throttle import ThrottleState as ThrottleState
from mercato.platform.throttle import after_failure as after_failure
from mercato.platform.throttle import wait_left as wait_left

UserState = str  # "active", "disabled" or "deleted"

# The first-party web client: people logging in through /api/v1/auth/login get tokens for it.
# It is public (no secret), so it may only refresh and revoke its own refresh tokens.
WEB_CLIENT_ID = "mercato-web"

GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_PASSWORD = "password"
GRANT_REFRESH_TOKEN = "refresh_token"
GRANT_TYPES = (GRANT_CLIENT_CREDENTIALS, GRANT_PASSWORD, GRANT_REFRESH_TOKEN)
# The scope a client needs for `POST /oauth/introspect` to tell it anything (DESIGN §2).
INTROSPECT_SCOPE = "mercato.introspect"

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,100}$")
# Unreserved URL characters only: no ":" (HTTP Basic splits on it), nothing to percent-encode.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{2,63}$")
MAX_SCOPES = 50


# --- the credential replica ------------------------------------------------------------------


def login_key(identifier: str) -> str:
    """How a username or e-mail is matched: NFKC, trimmed, case-folded (as accounts keys it)."""
    return unicodedata.normalize("NFKC", identifier).strip().casefold()


@dataclass(frozen=True)
class Credential:
    """What identity knows of a user: enough to authenticate and to fill a token.

    `changed_at` is when accounts made the change this state comes from; it settles which of
    two users holds a username or e-mail when their events arrive out of order.
    """

    user_id: str
    username: str
    email: str
    password_hash: str | None = field(repr=False)
    roles: tuple[str, ...]
    status: UserState
    version: int
    changed_at: datetime

    @property
    def username_key(self) -> str | None:
        """The case-folded username a login may name; None when deleted or given up."""
        return None if self.status == "deleted" or not self.username else login_key(self.username)

    @property
    def email_key(self) -> str | None:
        """The case-folded e-mail a login may name; None when deleted or given up."""
        return None if self.status == "deleted" or not self.email else login_key(self.email)

    @property
    def can_log_in(self) -> bool:
        """Active and holding a password hash."""
        return self.status == "active" and bool(self.password_hash)


def tombstone(user_id: str, version: int, changed_at: datetime) -> Credential:
    """The state of a deleted user: no password, no login names, kept only for its version."""
    return Credential(
        user_id=user_id,
        username="",
        email="",
        password_hash=None,
        roles=(),
        status="deleted",
        version=version,
        changed_at=changed_at,
    )


@dataclass(frozen=True)
class ReplicaChange:
    """What applying a user event does: whether to store `state`, and whether to end sessions."""

    apply: bool
    state: Credential
    end_sessions: bool = False


def replicate(current: Credential | None, incoming: Credential) -> ReplicaChange:
    """Apply an event's full state unless it is not newer than what is stored.

    Versions grow by one per change in accounts, so an older or repeated event is ignored,
    whatever order the broker delivers them in. Sessions end when the password changed or the
    user can no longer log in (disabled, deleted): refresh tokens issued against the old state
    must not outlive it.
    """
    if current is not None and incoming.version <= current.version:
        return ReplicaChange(False, current)
    end = (
        current is not None
        and current.can_log_in
        and (not incoming.can_log_in or incoming.password_hash != current.password_hash)
    )
    return ReplicaChange(True, incoming, end_sessions=end)


def release_keys(holder: Credential, claimant: Credential) -> tuple[Credential, Credential]:
    """Settle a clash over a username/e-mail key between two users' replicated states.

    Accounts never lets two users hold one key at once, so one of the two states is stale: the
    one whose change happened first gives the key up (it is marked unusable for login until its
    own next event arrives). Answers the (holder, claimant) pair after settling.
    """
    if holder.changed_at <= claimant.changed_at:
        return _without_keys_of(holder, claimant), claimant
    return holder, _without_keys_of(claimant, holder)


def _without_keys_of(loser: Credential, winner: Credential) -> Credential:
    username = loser.username
    email = loser.email
    if loser.username_key is not None and loser.username_key == winner.username_key:
        username = ""
    if loser.email_key is not None and loser.email_key == winner.email_key:
        email = ""
    return replace(loser, username=username, email=email)


# --- scopes and clients ----------------------------------------------------------------------


def parse_scope(raw: str | None) -> list[str] | None:
    """A space-delimited scope parameter as a list (None when absent or empty)."""
    if raw is None or not raw.strip():
        return None
    items = list(dict.fromkeys(raw.split(" ")))
    items = [item for item in items if item]
    for item in items:
        if not _SCOPE_TOKEN.match(item):
            raise RuleBroken("scope", "malformed scope")
    return items


def check_scopes(scopes: Sequence[str]) -> list[str]:
    """Valid, de-duplicated scope tokens for a client registration."""
    items = list(dict.fromkeys(scopes))
    if len(items) > MAX_SCOPES:
        raise RuleBroken("scopes", f"at most {MAX_SCOPES} scopes")
    for item in items:
        if not _SCOPE_TOKEN.match(item):
            raise RuleBroken("scopes", f"invalid scope token {item[:40]!r}")
    return items


def grant_scopes(requested: Sequence[str] | None, allowed: Iterable[str]) -> list[str]:
    """The scopes a token gets: all the client's when none are asked, else exactly the asked
    ones, which must all be the client's (RFC 6749 §3.3: never more than it was granted)."""
    allowed_list = list(allowed)
    if requested is None:
        return allowed_list
    extra = [scope for scope in requested if scope not in allowed_list]
    if extra:
        raise RuleBroken("scope", "requested scope exceeds the client's scopes")
    return list(requested)


def check_client_id(client_id: str) -> str:
    """3-64 unreserved URL characters, starting with a letter or digit."""
    if not _CLIENT_ID.match(client_id):
        raise RuleBroken(
            "client_id", "3 to 64 of letters, digits, '.', '_', '~', '-'; starting alphanumeric"
        )
    if client_id == WEB_CLIENT_ID:
        raise RuleBroken("client_id", "reserved")
    return client_id


def check_grant_types(grant_types: Sequence[str]) -> list[str]:
    """Known grant types, de-duplicated; at least one."""
    items = list(dict.fromkeys(grant_types))
    unknown = [g for g in items if g not in GRANT_TYPES]
    if unknown or not items:
        raise RuleBroken("grant_types", f"each one of {', '.join(GRANT_TYPES)}; at least one")
    return items


@dataclass(frozen=True)
class Client:
    """A registered machine client; the secret is known only as its SHA-256."""

    client_id: str
    name: str
    secret_hash: str = field(repr=False)
    scopes: tuple[str, ...]
    grant_types: tuple[str, ...]
    token_budget_per_hour: int | None
    created_at: datetime


def new_secret() -> str:
    """A fresh 256-bit random secret, URL-safe (client secrets and refresh tokens)."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """The SHA-256 (hex) under which a secret or an opaque token is stored.

    A fast hash is right here: the secrets are 256-bit random, so nothing is gained by slowing
    a guess down, and a slow hash would only cap the token endpoint (DESIGN §8).
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


# Compared against when the client is unknown, so both cases do the same work.
_NO_SECRET = digest("mercato-no-such-client")


def secret_matches(stored_digest: str | None, given: str) -> bool:
    """Whether `given` is the secret stored as `stored_digest`, in constant time."""
    matches = hmac.compare_digest(digest(given), stored_digest or _NO_SECRET)
    return matches and stored_digest is not None


# --- login throttling: the shared model (mercato.platform.throttle) ---------------------------


# --- refresh-token families ------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshFamily:
    """The refresh tokens descending from one login; revoking it ends them all."""

    id: str
    user_id: str
    client_id: str
    scopes: tuple[str, ...]
    remember_me: bool
    revoked: bool


@dataclass(frozen=True)
class RefreshRecord:
    """One stored refresh token (by digest) and its family."""

    family: RefreshFamily
    issued_at: datetime
    expires_at: datetime
    spent: bool

    def usable(self, now: datetime) -> bool:
        """Unspent, unexpired and in a family that still stands."""
        return not self.spent and not self.family.revoked and now < self.expires_at
