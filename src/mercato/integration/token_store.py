"""A `TokenStore` in the integration database, for installations without Redis.

Why a table rather than memory in embedded mode: the budget is what the upstream enforces on us
whatever happens to our process. A memory store forgets it on restart, so a process restarted
five times in an hour would spend a 5/hour budget on start-up alone and then be refused for the
rest of the hour. The SQLite file survives restarts and is shared by every process on the data
dir (a `mercato jobs run` next to `mercato run`); on PostgreSQL it is shared by every replica.

Atomicity: `try_acquire_budget` runs the platform's sliding-window counter
(`mercato.platform.request_window`) in one write transaction. On SQLite that transaction begins
IMMEDIATE (the platform's engine does so for every writer), so it holds the database's write
lock from its first statement; on PostgreSQL the counter locks the upstream's head row first, so
two replicas' budget checks on one upstream serialise.

Cached access tokens are stored sealed with the installation's key-encryption key when a
`SecretBox` is given (integration always gives one); a token cached in clear before is still
read, and sealed by `reseal_tokens` (`mercato secrets rotate`).
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.integration.tables import budget_heads, budget_stamps, token_cache
from mercato.platform.db import Database, insert_ignore
from mercato.platform.request_window import SqlRequestWindow
from mercato.platform.secrets import SecretBox, SecretsKeyError
from mercato.platform.token_stores import StoredToken, TokenStore

# Each upstream's token requests, keyed by the upstream's name.
_BUDGET = SqlRequestWindow(budget_heads, budget_stamps)


class SqlTokenStore:
    """Token cache, rolling-hour budget and fetch lock in the service's own database."""

    def __init__(self, database: Database, *, secrets: SecretBox | None = None) -> None:
        self._db = database
        self._secrets = secrets

    def _open(self, stored: str) -> str | None:
        if self._secrets is None:
            return stored
        try:
            return self._secrets.open(stored)
        except SecretsKeyError:
            return None  # only a cache: a token the key cannot open is fetched again

    async def _row(self, conn: AsyncConnection, name: str) -> None:
        await insert_ignore(conn, token_cache, {"name": name}, ["name"])

    async def load_token(self, name: str) -> StoredToken | None:
        """See `TokenStore`."""
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        token_cache.c.access_token,
                        token_cache.c.issued_at,
                        token_cache.c.expires_at,
                    ).where(token_cache.c.name == name)
                )
            ).first()
        if row is None or row.access_token is None:
            return None
        token = self._open(row.access_token)
        if token is None:
            return None
        return StoredToken(access_token=token, issued_at=row.issued_at, expires_at=row.expires_at)

    async def save_token(self, name: str, token: StoredToken, *, now: float) -> None:
        """See `TokenStore`."""
        async with self._db.transaction() as conn:
            await self._row(conn, name)
            await conn.execute(
                update(token_cache)
                .where(token_cache.c.name == name)
                .values(
                    access_token=(
                        self._secrets.seal(token.access_token)
                        if self._secrets
                        else token.access_token
                    ),
                    issued_at=token.issued_at,
                    expires_at=token.expires_at,
                )
            )

    async def clear_token(self, name: str, *, only_if: str | None = None) -> None:
        """See `TokenStore` (a compare-and-delete when `only_if` is given)."""
        condition = token_cache.c.name == name
        async with self._db.transaction() as conn:
            if only_if is not None:
                # A sealed token differs at every write: compare the opened value, with the row
                # locked (the write transaction on SQLite, FOR UPDATE on PostgreSQL) so no save
                # slips in between the read and the clear.
                stored = (
                    await conn.execute(
                        select(token_cache.c.access_token).where(condition).with_for_update()
                    )
                ).scalar()
                if stored is None or self._open(stored) != only_if:
                    return
                condition = and_(condition, token_cache.c.access_token == stored)
            await conn.execute(
                update(token_cache)
                .where(condition)
                .values(access_token=None, issued_at=None, expires_at=None)
            )

    async def reseal_tokens(self) -> int:
        """Re-encrypt every cached token with the first key-encryption key (tokens cached in
        clear get sealed); answers how many rows were rewritten. Needs `secrets`."""
        assert self._secrets is not None, "reseal needs a SecretBox"
        count = 0
        async with self._db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(token_cache.c.name, token_cache.c.access_token)
                    .where(token_cache.c.access_token.is_not(None))
                    .with_for_update()
                )
            ).all()
            for row in rows:
                await conn.execute(
                    update(token_cache)
                    .where(token_cache.c.name == row.name)
                    .values(access_token=self._secrets.reseal(row.access_token))
                )
                count += 1
        return count

    async def try_acquire_budget(
        self, name: str, *, now: float, limit: int, window: float
    ) -> tuple[bool, float]:
        """See `TokenStore`: checked and recorded in one serialised transaction."""
        async with self._db.transaction() as conn:
            return await _BUDGET.take(conn, name, now=now, limit=limit, window=window)

    async def requests_in_window(self, name: str, *, now: float, window: float) -> int:
        """See `TokenStore`."""
        async with self._db.read() as conn:
            return await _BUDGET.count(conn, name, now=now, window=window)

    async def acquire_lock(self, name: str, owner: str, *, ttl: float, now: float) -> bool:
        """See `TokenStore`: a conditional update, so exactly one owner wins."""
        async with self._db.transaction() as conn:
            await self._row(conn, name)
            result = await conn.execute(
                update(token_cache)
                .where(
                    token_cache.c.name == name,
                    or_(
                        token_cache.c.lock_owner.is_(None),
                        token_cache.c.lock_owner == owner,
                        token_cache.c.lock_until <= now,
                    ),
                )
                .values(lock_owner=owner, lock_until=now + ttl)
            )
            return result.rowcount == 1

    async def release_lock(self, name: str, owner: str) -> None:
        """See `TokenStore`."""
        async with self._db.transaction() as conn:
            await conn.execute(
                update(token_cache)
                .where(token_cache.c.name == name, token_cache.c.lock_owner == owner)
                .values(lock_owner=None, lock_until=None)
            )

    async def record_error(self, name: str, error: str | None) -> None:
        """See `TokenStore`."""
        async with self._db.transaction() as conn:
            await self._row(conn, name)
            await conn.execute(
                update(token_cache).where(token_cache.c.name == name).values(last_error=error)
            )

    async def last_error(self, name: str) -> str | None:
        """See `TokenStore`."""
        async with self._db.read() as conn:
            error = (
                await conn.execute(
                    select(token_cache.c.last_error).where(token_cache.c.name == name)
                )
            ).scalar()
        return None if error is None else str(error)


class DurableBudgetTokenStore:
    """Tokens, fetch lock and last error in a fast shared store (Redis), the budget in the
    database.

    Why split: the upstream enforces its budget whatever happens to our Redis. A Redis restart
    (no persistence, or an older snapshot) would forget the hour's requests and let the replicas
    spend a second budget within the hour, which DESIGN §5 forbids. A budget is a handful of
    writes an hour, so keeping it in PostgreSQL costs nothing; losing a cached token or a lock
    costs one more (budgeted) fetch, so those may stay in Redis.
    """

    def __init__(self, fast: TokenStore, durable: SqlTokenStore) -> None:
        self._fast = fast
        self._durable = durable

    async def load_token(self, name: str) -> StoredToken | None:
        """The cached token (fast store)."""
        return await self._fast.load_token(name)

    async def save_token(self, name: str, token: StoredToken, *, now: float) -> None:
        """Cache `token` (fast store)."""
        await self._fast.save_token(name, token, now=now)

    async def clear_token(self, name: str, *, only_if: str | None = None) -> None:
        """Forget the cached token (fast store)."""
        await self._fast.clear_token(name, only_if=only_if)

    async def try_acquire_budget(
        self, name: str, *, now: float, limit: int, window: float
    ) -> tuple[bool, float]:
        """Record one request in the durable budget, if the window allows it."""
        return await self._durable.try_acquire_budget(name, now=now, limit=limit, window=window)

    async def requests_in_window(self, name: str, *, now: float, window: float) -> int:
        """Requests in the durable budget's window."""
        return await self._durable.requests_in_window(name, now=now, window=window)

    async def acquire_lock(self, name: str, owner: str, *, ttl: float, now: float) -> bool:
        """Take the fetch lock (fast store)."""
        return await self._fast.acquire_lock(name, owner, ttl=ttl, now=now)

    async def release_lock(self, name: str, owner: str) -> None:
        """Release the fetch lock (fast store)."""
        await self._fast.release_lock(name, owner)

    async def record_error(self, name: str, error: str | None) -> None:
        """Remember the last failure (fast store)."""
        await self._fast.record_error(name, error)

    async def last_error(self, name: str) -> str | None:
        """The last failure (fast store)."""
        return await self._fast.last_error(name)
