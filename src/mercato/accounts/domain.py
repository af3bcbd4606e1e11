"""Accounts' rules: what a valid username, e-mail and password are, and how a user changes.

No framework imports here (an import-linter contract keeps it so).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime

import icu  # type: ignore[import-untyped]  # PyICU: Unicode TR39 (UTS #39) security checks

from mercato.accounts.contracts import ROLES, Role, UserStatus

# The throttle model is the platform's, named here as part of this service's rules.
from mercato.platform.errors import RuleBroken
from mercato.platform.throttle import ThrottlePolicy as ThrottlePolicy
from mercato.platform.throttle import ThrottleState as ThrottleState
from mercato.platform.throttle import after_failure as after_failure
from mercato.platform.throttle import wait_left as wait_left

USERNAME_MIN, USERNAME_MAX = 3, 32
PASSWORD_MIN, PASSWORD_MAX = 10, 256
# Letters and digits of any script, plus . _ -; no "@" so a login name is never mistaken for
# an e-mail address, and no spaces or controls.
_USERNAME = re.compile(r"^[\w.-]+$")


def _spoof_checker() -> icu.SpoofChecker:
    # TR39 "highly restrictive": one script, or Latin with Han and the Japanese or Korean
    # scripts that are written with it (Common and Inherited characters go with any), and
    # digits of one numbering system. So `admin` spelt with a Cyrillic a (U+0430) is refused and
    # `Ψυχή` or `東京tokyo` are not.
    checker = icu.SpoofChecker()
    checker.setChecks(icu.USpoofChecks.RESTRICTION_LEVEL | icu.USpoofChecks.MIXED_NUMBERS)
    checker.setRestrictionLevel(icu.URestrictionLevel.HIGHLY_RESTRICTIVE)
    return checker


# Configured once and only read afterwards, which ICU allows from any thread.
_SPOOF = _spoof_checker()


def normalize_username(raw: str) -> tuple[str, str]:
    """The username as stored (NFKC) and its uniqueness key (case-folded)."""
    username = unicodedata.normalize("NFKC", raw).strip()
    if not USERNAME_MIN <= len(username) <= USERNAME_MAX:
        raise RuleBroken("username", f"must be {USERNAME_MIN} to {USERNAME_MAX} characters long")
    if not _USERNAME.match(username) or username[0] in ".-":
        raise RuleBroken(
            "username", "may hold letters, digits, '.', '_' and '-', and start with a letter"
        )
    if _SPOOF.check(username):
        raise RuleBroken(
            "username", "must not mix scripts (such as Latin with Cyrillic) or digit systems"
        )
    return username, username.casefold()


def username_skeleton(username: str) -> str:
    """The TR39 confusable skeleton of a (normalized) username, case-insensitive.

    Two names with the same skeleton look alike (`admin`, `ADMIN`, `admin` with a Cyrillic a
    U+0430 or i U+0456, `adrnin`), so only one of them may be registered.
    """
    return str(_SPOOF.getSkeleton(0, username.casefold()))


def normalize_email(raw: str) -> tuple[str, str]:
    """The e-mail as stored and its uniqueness key: `A@x.com` and `a@x.com` are one account."""
    # Imported at the first e-mail, not at start-up (about 20 ms of every `mercato run`).
    from email_validator import EmailNotValidError, validate_email

    try:
        email = validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise RuleBroken("email", str(exc)) from None
    return email, email.casefold()


def check_password(password: str, *, username: str | None = None) -> None:
    """At least 10 characters, not all of one class, not the username."""
    if len(password) < PASSWORD_MIN:
        raise RuleBroken("password", f"must be at least {PASSWORD_MIN} characters long")
    if len(password) > PASSWORD_MAX:
        raise RuleBroken("password", f"must be at most {PASSWORD_MAX} characters long")
    classes = {_char_class(ch) for ch in password}
    if len(classes) < 2:
        raise RuleBroken(
            "password", "must mix at least two of: lower case, upper case, digits, symbols"
        )
    if username and password.casefold() == username.casefold():
        raise RuleBroken("password", "must not be the username")


def _char_class(ch: str) -> str:
    if ch.isdigit():
        return "digit"
    if ch.islower():
        return "lower"
    if ch.isupper():
        return "upper"
    return "symbol"


def check_roles(roles: list[str]) -> list[Role]:
    """Known roles, de-duplicated and sorted; every user keeps `user`."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise RuleBroken("roles", f"unknown role(s): {', '.join(unknown)}")
    chosen: set[Role] = {role for role in ROLES if role in roles}
    chosen.add("user")
    return sorted(chosen)


@dataclass(frozen=True)
class User:
    """A user account; `version` grows by one with each change (events carry it)."""

    id: str
    username: str
    email: str
    display_name: str | None
    password_hash: str = field(repr=False)
    roles: list[Role]
    status: UserStatus
    version: int
    created_at: datetime
    updated_at: datetime
    # The TR39 skeleton that keeps look-alikes out; None only for a user registered before
    # skeletons were kept whose name looks like an older user's (until they rename).
    username_skeleton: str | None = None

    @property
    def username_key(self) -> str:
        """The case-folded username that must be unique."""
        return self.username.casefold()

    @property
    def email_key(self) -> str:
        """The case-folded e-mail that must be unique."""
        return self.email.casefold()


@dataclass(frozen=True)
class ProfileChange:
    """What a user asked to change (None: leave as is); the password already hashed."""

    display_name: str | None = None
    clear_display_name: bool = False
    email: str | None = None
    username: str | None = None
    password_hash: str | None = None
    roles: list[Role] | None = None
    status: UserStatus | None = None


def apply_change(user: User, change: ProfileChange, now: datetime) -> tuple[User, list[str]]:
    """The user after `change`, and the names of the fields that really changed."""
    changed: list[str] = []
    updated = user
    if change.clear_display_name and user.display_name is not None:
        updated = replace(updated, display_name=None)
        changed.append("display_name")
    elif change.display_name is not None and change.display_name != user.display_name:
        updated = replace(updated, display_name=change.display_name)
        changed.append("display_name")
    if change.email is not None and change.email != user.email:
        updated = replace(updated, email=change.email)
        changed.append("email")
    if change.username is not None and change.username != user.username:
        updated = replace(
            updated, username=change.username, username_skeleton=username_skeleton(change.username)
        )
        changed.append("username")
    if change.password_hash is not None:
        updated = replace(updated, password_hash=change.password_hash)
        changed.append("password")
    if change.roles is not None and sorted(change.roles) != sorted(user.roles):
        updated = replace(updated, roles=sorted(change.roles))
        changed.append("roles")
    if change.status is not None and change.status != user.status:
        updated = replace(updated, status=change.status)
        changed.append("status")
    if changed:
        updated = replace(updated, version=user.version + 1, updated_at=now)
    return updated, changed


def needs_current_password(user: User, change: ProfileChange, *, new_password: bool) -> bool:
    """Whether the change touches how the account signs in (e-mail, username, password):
    those need the current password, so a stolen access token cannot take the account over.
    Sending the e-mail or username it already has changes nothing and needs none."""
    return (
        new_password
        or (change.email is not None and change.email != user.email)
        or (change.username is not None and change.username != user.username)
    )


# --- throttling wrong current passwords: identity's login model (mercato.platform.throttle) ---


# Identity's login defaults: five free failures, then 1 s doubling up to 15 min; an hour to forget.
DEFAULT_THROTTLE = ThrottlePolicy(free=5, base=1.0, maximum=15 * 60.0, forget_after=3600.0)
