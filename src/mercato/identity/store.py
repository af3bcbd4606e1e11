"""Repositories over identity's tables: credentials, clients, throttle, budget, bootstrap."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.identity.domain import Client, Credential, ThrottleState
from mercato.identity.tables import (
    bootstrap,
    budget_heads,
    budget_stamps,
    clients,
    credentials,
    login_throttle,
)
from mercato.platform.db import dialect_insert, insert_ignore
from mercato.platform.request_window import SqlRequestWindow

# Each budgeted client's token requests, keyed by client id (see `budget.DatabaseBudget`).
BUDGET_WINDOW = SqlRequestWindow(budget_heads, budget_stamps)


class CredentialRepository:
    """The credential replica in one transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, user_id: str) -> Credential | None:
        """The replicated state of a user, tombstones included."""
        rows = await self.conn.execute(select(credentials).where(credentials.c.user_id == user_id))
        found = rows.mappings().first()
        return _credential(found) if found else None

    async def find_by_login(self, key: str) -> Credential | None:
        """The user whose username or e-mail key is `key` (see `domain.login_key`)."""
        rows = await self.conn.execute(
            select(credentials).where(
                or_(credentials.c.username_key == key, credentials.c.email_key == key)
            )
        )
        found = rows.mappings().first()
        return _credential(found) if found else None

    async def holders(self, state: Credential) -> list[Credential]:
        """Other users holding the username or e-mail key of `state`."""
        keys = [k for k in (state.username_key, state.email_key) if k is not None]
        if not keys:
            return []
        rows = await self.conn.execute(
            select(credentials).where(
                credentials.c.user_id != state.user_id,
                or_(credentials.c.username_key.in_(keys), credentials.c.email_key.in_(keys)),
            )
        )
        return [_credential(row) for row in rows.mappings()]

    async def save(self, state: Credential) -> None:
        """Insert or replace a user's state."""
        values = {
            "username": state.username,
            "username_key": state.username_key,
            "email": state.email,
            "email_key": state.email_key,
            "password_hash": state.password_hash,
            "roles": json.dumps(list(state.roles)),
            "status": state.status,
            "version": state.version,
            "changed_at": state.changed_at,
        }
        result = await self.conn.execute(
            update(credentials).where(credentials.c.user_id == state.user_id).values(**values)
        )
        if result.rowcount == 0:
            await self.conn.execute(credentials.insert().values(user_id=state.user_id, **values))


def _credential(row: RowMapping) -> Credential:
    return Credential(
        user_id=row["user_id"],
        username=row["username"],
        email=row["email"],
        password_hash=row["password_hash"],
        roles=tuple(json.loads(row["roles"])),
        status=row["status"],
        version=row["version"],
        changed_at=row["changed_at"],
    )


class ClientTaken(Exception):
    """A client with that id exists already."""


class ClientRepository:
    """Registered machine clients in one transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, client_id: str, *, for_update: bool = False) -> Client | None:
        """The client, or None; `for_update` locks its row (PostgreSQL) for a budget check."""
        query = select(clients).where(clients.c.client_id == client_id)
        if for_update and self.conn.dialect.name == "postgresql":
            query = query.with_for_update()
        found = (await self.conn.execute(query)).mappings().first()
        return _client(found) if found else None

    async def add(self, client: Client) -> None:
        """Register a client; `ClientTaken` when the id is in use."""
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(
                    clients.insert().values(
                        client_id=client.client_id,
                        name=client.name,
                        secret_hash=client.secret_hash,
                        scopes=json.dumps(list(client.scopes)),
                        grant_types=json.dumps(list(client.grant_types)),
                        token_budget_per_hour=client.token_budget_per_hour,
                        created_at=client.created_at,
                    )
                )
        except IntegrityError:
            raise ClientTaken(client.client_id) from None

    async def page(self, skip: int, limit: int) -> tuple[list[Client], int]:
        """Clients in registration order, and how many there are."""
        total = (await self.conn.execute(select(func.count()).select_from(clients))).scalar_one()
        rows = await self.conn.execute(
            select(clients)
            .order_by(clients.c.created_at, clients.c.client_id)
            .offset(skip)
            .limit(limit)
        )
        return [_client(row) for row in rows.mappings()], total

    async def delete(self, client_id: str) -> bool:
        """Remove a client (and its budget record); answers whether it existed."""
        result = await self.conn.execute(delete(clients).where(clients.c.client_id == client_id))
        await BUDGET_WINDOW.forget(self.conn, client_id)
        return result.rowcount > 0


def _client(row: RowMapping) -> Client:
    return Client(
        client_id=row["client_id"],
        name=row["name"],
        secret_hash=row["secret_hash"],
        scopes=tuple(json.loads(row["scopes"])),
        grant_types=tuple(json.loads(row["grant_types"])),
        token_budget_per_hour=row["token_budget_per_hour"],
        created_at=row["created_at"],
    )


class ThrottleRepository:
    """Failed-login counters by key digest."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def claim(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        """The states of `keys`, each row created (with no failures) when missing and locked
        until the transaction ends.

        One upsert per key (INSERT ... ON CONFLICT DO UPDATE ... RETURNING): a key with no row
        yet gets one inside the same statement that locks it, so concurrent first failures
        queue on that row instead of each reading "no failures" (a SELECT ... FOR UPDATE locks
        nothing when the row does not exist). Keys are taken in sorted order so two attempts
        sharing a key cannot deadlock. On SQLite the writer lock (BEGIN IMMEDIATE) already
        serialises the step; the same statement keeps one code path.
        """
        states: dict[str, ThrottleState] = {}
        for key in sorted(set(keys)):
            stmt = (
                dialect_insert(self.conn)(login_throttle)
                .values(key=key, failures=0, locked_until=0.0, last_failure_at=0.0)
                .on_conflict_do_update(
                    index_elements=["key"], set_={"failures": login_throttle.c.failures}
                )
                .returning(
                    login_throttle.c.failures,
                    login_throttle.c.locked_until,
                    login_throttle.c.last_failure_at,
                )
            )
            row = (await self.conn.execute(stmt)).one()
            states[key] = ThrottleState(row.failures, row.locked_until, row.last_failure_at)
        return states

    async def put(self, key: str, state: ThrottleState) -> None:
        """Store the state of a key `claim` took in this transaction."""
        await self.conn.execute(
            update(login_throttle)
            .where(login_throttle.c.key == key)
            .values(
                failures=state.failures,
                locked_until=state.locked_until,
                last_failure_at=state.last_failure_at,
            )
        )

    async def clear(self, key: str) -> None:
        """Forget a key's failures (after a successful login)."""
        await self.conn.execute(delete(login_throttle).where(login_throttle.c.key == key))

    async def uncount(self, key: str, free: int) -> None:
        """Take back one counted attempt (it succeeded); lift the lock if within `free`."""
        await self.conn.execute(
            update(login_throttle)
            .where(login_throttle.c.key == key, login_throttle.c.failures > 0)
            .values(failures=login_throttle.c.failures - 1)
        )
        await self.conn.execute(
            update(login_throttle)
            .where(login_throttle.c.key == key, login_throttle.c.failures <= free)
            .values(locked_until=0.0)
        )

    async def prune(self, before: float) -> int:
        """Drop counters whose last failure is older than `before` and that are not locked."""
        result = await self.conn.execute(
            delete(login_throttle).where(
                login_throttle.c.last_failure_at < before, login_throttle.c.locked_until < before
            )
        )
        return max(result.rowcount, 0)


class BootstrapRepository:
    """Marks of what was provisioned on first start."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def value(self, name: str) -> str | None:
        """What was provisioned under `name`, if anything."""
        row = await self.conn.execute(select(bootstrap.c.value).where(bootstrap.c.name == name))
        return row.scalar_one_or_none()

    async def claim(self, name: str, value: str) -> bool:
        """Record `name` as provisioned; False when it was already."""
        return (
            await insert_ignore(self.conn, bootstrap, {"name": name, "value": value}, ["name"]) == 1
        )
