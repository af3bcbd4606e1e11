"""Accounts' rules: what a valid username, e-mail and password are, and how a user changes.

No framework imports here (an import-linter contract keeps it so).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime

from email_validator import EmailNotValidError, validate_email

from mercato.accounts.contracts import ROLES, Role, UserStatus

USERNAME_MIN, USERNAME_MAX = 3, 32
PASSWORD_MIN, PASSWORD_MAX = 10, 256
# Letters and digits of any script, plus . _ -; no "@" so a login name is never mistaken for
# an e-mail address, and no spaces or controls.
_USERNAME = re.compile(r"^[\w.-]+$")


class RuleBroken(ValueError):
    """An input breaks an accounts rule; `field` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


def normalize_username(raw: str) -> tuple[str, str]:
    """The username as stored (NFKC) and its uniqueness key (case-folded)."""
    username = unicodedata.normalize("NFKC", raw).strip()
    if not USERNAME_MIN <= len(username) <= USERNAME_MAX:
        raise RuleBroken("username", f"must be {USERNAME_MIN} to {USERNAME_MAX} characters long")
    if not _USERNAME.match(username) or username[0] in ".-":
        raise RuleBroken(
            "username", "may hold letters, digits, '.', '_' and '-', and start with a letter"
        )
    return username, username.casefold()


def normalize_email(raw: str) -> tuple[str, str]:
    """The e-mail as stored and its uniqueness key: `A@x.com` and `a@x.com` are one account."""
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
        updated = replace(updated, username=change.username)
        changed.append("username")
    if change.password_hash is not None:
        updated = replace(updated, password_hash=change.password_hash)
        changed.append("password")
    if change.roles is not None and sorted(change.roles) != sorted(user.roles):
        updated = replace(updated, roles=sorted(change.roles))
        changed.append("roles")
    if changed:
        updated = replace(updated, version=user.version + 1, updated_at=now)
    return updated, changed
