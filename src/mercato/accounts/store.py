"""Accounts' tables and the repository over them."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Column, Float, Index, Integer, String, Table, Text, delete, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.accounts.domain import ThrottlePolicy, ThrottleState, User, after_failure, wait_left
from mercato.platform.db import UTCDateTime, insert_ignore, naming_metadata

metadata = naming_metadata()

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("username_key", String(64), nullable=False, unique=True),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False, unique=True),
    Column("display_name", String(200), nullable=True),
    Column("password_hash", Text, nullable=False),
    Column("roles", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # TR39 skeleton (domain.username_skeleton): unique, so two look-alike names racing to
    # register cannot both succeed. NULL (several allowed) only for grandfathered look-alikes.
    Column("username_skeleton", String(256), nullable=True),
    Index("uq_users_username_skeleton", "username_skeleton", unique=True),
)

# Failed `current_password` checks per account (PATCH /api/v1/accounts/me), like identity's
# login throttle; times are epoch seconds.
password_throttle = Table(
    "password_throttle",
    metadata,
    Column("user_id", String(36), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", Float, nullable=False),
    Column("last_failure_at", Float, nullable=False),
)

# One row per thing provisioned on first start (the admin), so a restart changes nothing.
bootstrap = Table(
    "bootstrap",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
)


LOOKS_TAKEN = "looks like a username that is already taken"


class Taken(Exception):
    """A unique username or e-mail is already in use; `field` says which, `reason` how."""

    def __init__(self, field_name: str, reason: str = "already taken") -> None:
        super().__init__(f"{field_name} taken")
        self.field = field_name
        self.reason = reason


def _row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "username_key": user.username_key,
        "email": user.email,
        "email_key": user.email_key,
        "display_name": user.display_name,
        "password_hash": user.password_hash,
        "roles": json.dumps(user.roles),
        "status": user.status,
        "version": user.version,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "username_skeleton": user.username_skeleton,
    }


def _user(row: RowMapping) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        email=row["email"],
        display_name=row["display_name"],
        password_hash=row["password_hash"],
        roles=json.loads(row["roles"]),
        status=row["status"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        username_skeleton=row["username_skeleton"],
    )


class UserRepository:
    """Users in one transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        row = (await self.conn.execute(select(users).where(users.c.id == user_id))).mappings()
        found = row.first()
        return _user(found) if found else None

    async def taken(self, user: User) -> Taken | None:
        """Which of the user's unique values another user holds already, as a `Taken`."""
        checks = [
            ("username", users.c.username_key, user.username_key, "already taken"),
            ("email", users.c.email_key, user.email_key, "already taken"),
        ]
        if user.username_skeleton is not None:
            checks.append(
                ("username", users.c.username_skeleton, user.username_skeleton, LOOKS_TAKEN)
            )
        for name, column, key, reason in checks:
            other = await self.conn.execute(
                select(users.c.id).where(column == key, users.c.id != user.id)
            )
            if other.first() is not None:
                return Taken(name, reason)
        return None

    async def add(self, user: User) -> None:
        """Insert a new user; `Taken` when a concurrent writer took its name or e-mail."""
        clash = await self.taken(user)
        if clash:
            raise clash
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(users.insert().values(**_row(user)))
        except IntegrityError:
            raise (await self.taken(user) or Taken("username", LOOKS_TAKEN)) from None

    async def save(self, user: User) -> None:
        """Write a changed user; `Taken` on a unique clash."""
        clash = await self.taken(user)
        if clash:
            raise clash
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(
                    users.update().where(users.c.id == user.id).values(**_row(user))
                )
        except IntegrityError:
            raise (await self.taken(user) or Taken("username", LOOKS_TAKEN)) from None

    async def delete(self, user_id: str) -> None:
        """Remove the user row (and its password-check counter)."""
        await self.conn.execute(users.delete().where(users.c.id == user_id))
        await self.conn.execute(
            delete(password_throttle).where(password_throttle.c.user_id == user_id)
        )

    async def page(self, skip: int, limit: int) -> tuple[list[User], int]:
        """Users in creation order, and how many there are."""
        total = (await self.conn.execute(select(func.count()).select_from(users))).scalar_one()
        rows = await self.conn.execute(
            select(users).order_by(users.c.created_at, users.c.id).offset(skip).limit(limit)
        )
        return [_user(row) for row in rows.mappings()], total

    async def bootstrap_value(self, name: str) -> str | None:
        """What was provisioned under `name` on first start, if anything."""
        row = await self.conn.execute(select(bootstrap.c.value).where(bootstrap.c.name == name))
        return row.scalar_one_or_none()

    async def claim_bootstrap(self, name: str, value: str) -> bool:
        """Record that `name` is provisioned now; False when someone recorded it already."""
        return (
            await insert_ignore(self.conn, bootstrap, {"name": name, "value": value}, ["name"]) == 1
        )


class PasswordThrottle:
    """Counters of wrong `current_password` answers, one row per account."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def count_failure(self, user_id: str, policy: ThrottlePolicy, now: float) -> float:
        """Seconds the account must still wait (nothing counted then), else 0 after counting
        one failure up front (taken back by `clear` when the password proves right).

        The row is made first and then locked, so concurrent first failures queue on it and
        each counts on top of the last (no check-then-insert race on PostgreSQL).
        """
        empty = {"failures": 0, "locked_until": 0.0, "last_failure_at": 0.0}
        await insert_ignore(
            self.conn, password_throttle, {"user_id": user_id, **empty}, ["user_id"]
        )
        query = select(password_throttle).where(password_throttle.c.user_id == user_id)
        if self.conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await self.conn.execute(query)).mappings().one()
        state = ThrottleState(row["failures"], row["locked_until"], row["last_failure_at"])
        wait = wait_left(state, now)
        if wait > 0:
            return wait
        after = after_failure(policy, state, now)
        await self.conn.execute(
            password_throttle.update()
            .where(password_throttle.c.user_id == user_id)
            .values(
                failures=after.failures,
                locked_until=after.locked_until,
                last_failure_at=after.last_failure_at,
            )
        )
        return 0.0

    async def clear(self, user_id: str) -> None:
        """Forget the account's failures (the current password was given right)."""
        await self.conn.execute(
            delete(password_throttle).where(password_throttle.c.user_id == user_id)
        )
