"""The one sliding-window request counter behind every budget ("at most `limit` requests in any
`window` seconds"): identity's client token budgets and the token managers' upstream budgets.

The rule, kept exactly: a request at `now` may go when fewer than `limit` recorded requests fall
in `(now - window, now]`; otherwise it waits until the `limit`-th most recent one leaves. Only
the `limit` most recent stamps decide that, so each key keeps at most `limit` stamps, and a
request reads and writes one of them: the oldest kept stamp is either out of the window (the
request goes and its stamp replaces that one) or it is not (the answer is a refusal, with the
wait). That costs the same in the hour's first and last minute: no per-request scan of the
window, no DELETE of old stamps (a kept stamp is overwritten in place).

Why not per-minute buckets: summing buckets counts up to a minute too many or too few at the
window's edge, so either the budget lets one minute's worth too much through or a client waits
up to a minute too long, and `Retry-After` would no longer be exact. Why not `limits` or
`pyrate-limiter` (DESIGN §8): `limits` has no SQL storage at all (memory, Redis, Memcached,
MongoDB, etcd), so embedded mode's SQLite and distributed mode's PostgreSQL budgets would need a
second mechanism anyway; pyrate-limiter's SQLite and PostgreSQL buckets keep a row per request
on synchronous connections of their own (`sqlite3`, a psycopg pool), outside the service's
database handle and transaction, with a dependency (psycopg) nothing else here needs. Their
Redis moving windows are this same "keep `limit` stamps" idea.

Storage: `MemoryRequestWindow` (one process), `SqlRequestWindow` over two tables a service makes
with `window_tables` in its own metadata (SQLite or PostgreSQL; the call runs in the caller's
write transaction), and `RedisRequestWindow` (one Lua script per request). Each service keeps its
own tables or keys; this module only provides the mechanism.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    inspect,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.platform.db import dialect_insert, naming_metadata

if TYPE_CHECKING:  # imported only where Redis is configured
    from redis.asyncio import Redis

Decision = tuple[bool, float]
"""(True, 0.0) when the request was counted, else (False, seconds until one may go)."""


def window_tables(metadata: MetaData, name: str) -> tuple[Table, Table]:
    """The two tables of a `SqlRequestWindow` in a service's `metadata`: `<name>_heads` (one row
    per key: how many stamps it keeps, and the row every check of that key locks) and
    `<name>_stamps` (at most `limit` rows per key)."""
    heads = Table(
        f"{name}_heads",
        metadata,
        Column("key", String(200), primary_key=True),
        Column("kept", Integer, nullable=False),
    )
    stamps = Table(
        f"{name}_stamps",
        metadata,
        Column("key", String(200), primary_key=True),
        Column("slot", Integer, primary_key=True),
        Column("at", Float, nullable=False),
    )
    # The oldest kept stamp of a key is one index probe.
    Index(f"ix_{name}_stamps_key_at", stamps.c.key, stamps.c.at)
    return heads, stamps


def create_window_tables(bind: Connection, name: str, old: Table | None = None) -> None:
    """For a migration: create `window_tables(name)` unless they exist, and move into them the
    stamps of an older one-row-per-request table `old` (columns: the key first, then the time),
    which is then dropped. Every stamp moves (the limit is not known here); a key holding more
    than its limit is trimmed by its next `take`."""
    heads, stamps = window_tables(naming_metadata(), name)
    heads.create(bind, checkfirst=True)
    stamps.create(bind, checkfirst=True)
    if old is None or not inspect(bind).has_table(old.name):
        return
    key_column, at_column = list(old.c)[-2:]
    kept: dict[str, int] = {}
    rows = []
    for key, at in bind.execute(select(key_column, at_column).order_by(key_column, at_column)):
        slot = kept[key] = kept.get(key, -1) + 1
        rows.append({"key": key, "slot": slot, "at": float(at)})
    if rows:
        bind.execute(stamps.insert(), rows)
        bind.execute(heads.insert(), [{"key": k, "kept": n + 1} for k, n in kept.items()])
    old.drop(bind)


def drop_window_tables(bind: Connection, name: str, old: Table) -> None:
    """For a migration's downgrade: drop `window_tables(name)` and create `old` again, empty
    (a downgraded service starts its budgets afresh)."""
    for table in reversed(window_tables(naming_metadata(), name)):
        table.drop(bind, checkfirst=True)
    old.create(bind, checkfirst=True)


class MemoryRequestWindow:
    """The counter in this process's memory (forgotten on restart): the `limit` most recent
    stamps of each key in a min-heap. No await inside, hence atomic on the event loop."""

    def __init__(self) -> None:
        self._stamps: dict[str, list[float]] = {}

    def take(self, key: str, *, now: float, limit: int, window: float) -> Decision:
        """Count one request at `now` if the window allows it (see the module's rule)."""
        kept = self._stamps.setdefault(key, [])
        while len(kept) > limit:  # the limit went down since the last request
            heapq.heappop(kept)
        if len(kept) < limit:
            heapq.heappush(kept, now)
            return True, 0.0
        if kept[0] > now - window:
            return False, max(0.0, kept[0] + window - now)
        heapq.heapreplace(kept, now)
        return True, 0.0

    def count(self, key: str, *, now: float, window: float) -> int:
        """How many kept requests fall in `(now - window, now]` (for status pages)."""
        return sum(1 for at in self._stamps.get(key, ()) if now - window < at <= now)


class SqlRequestWindow:
    """The counter in a service's database; every method runs in the caller's transaction.

    `take` must run in a write transaction: it first upserts the key's head row, which locks it
    until commit (PostgreSQL; SQLite's writers are serialised by BEGIN IMMEDIATE), so concurrent
    checks of one key, from any replica, count and record one after the other.
    """

    def __init__(self, heads: Table, stamps: Table) -> None:
        self._heads = heads
        self._stamps = stamps

    async def take(
        self, conn: AsyncConnection, key: str, *, now: float, limit: int, window: float
    ) -> Decision:
        """Count one request at `now` if the window allows it (see the module's rule)."""
        heads, stamps = self._heads, self._stamps
        # While the key keeps fewer than `limit` stamps, one upsert takes the next slot and a
        # second statement stamps it: two round trips, whatever the window holds. ON CONFLICT
        # DO UPDATE locks the head row until commit even when its WHERE refuses the update, so
        # the slower path below runs under that lock too.
        claim = (
            dialect_insert(conn)(heads)
            .values(key=key, kept=1)
            .on_conflict_do_update(
                index_elements=["key"], set_={"kept": heads.c.kept + 1}, where=heads.c.kept < limit
            )
            .returning(heads.c.kept)
        )
        taken = (await conn.execute(claim)).scalar_one_or_none()
        if taken is not None:
            await conn.execute(stamps.insert().values(key=key, slot=int(taken) - 1, at=now))
            return True, 0.0
        kept = int(
            (await conn.execute(select(heads.c.kept).where(heads.c.key == key))).scalar_one()
        )
        if kept > limit:
            await self._shrink(conn, key, limit)
        slot, oldest = (
            await conn.execute(
                select(stamps.c.slot, stamps.c.at)
                .where(stamps.c.key == key)
                .order_by(stamps.c.at, stamps.c.slot)
                .limit(1)
            )
        ).one()
        if oldest > now - window:
            return False, max(0.0, oldest + window - now)
        await conn.execute(
            update(stamps).where(stamps.c.key == key, stamps.c.slot == slot).values(at=now)
        )
        return True, 0.0

    async def take_many(
        self, conn: AsyncConnection, key: str, nows: list[float], *, limit: int, window: float
    ) -> list[Decision]:
        """`take` for each of `nows` (ascending), in order. While all of them fit below the
        limit, which needs no look at the window, they cost two statements together."""
        if 1 < len(nows) <= limit:
            heads = self._heads
            claim = (
                dialect_insert(conn)(heads)
                .values(key=key, kept=len(nows))
                .on_conflict_do_update(
                    index_elements=["key"],
                    set_={"kept": heads.c.kept + len(nows)},
                    where=heads.c.kept + len(nows) <= limit,
                )
                .returning(heads.c.kept)
            )
            taken = (await conn.execute(claim)).scalar_one_or_none()
            if taken is not None:
                first = int(taken) - len(nows)
                rows = [{"key": key, "slot": first + i, "at": at} for i, at in enumerate(nows)]
                await conn.execute(self._stamps.insert(), rows)
                return [(True, 0.0)] * len(nows)
        return [await self.take(conn, key, now=at, limit=limit, window=window) for at in nows]

    async def _shrink(self, conn: AsyncConnection, key: str, limit: int) -> int:
        """Keep only the `limit` most recent stamps (the limit went down), in slots 0..n-1."""
        stamps = self._stamps
        newest = (
            await conn.execute(
                select(stamps.c.at)
                .where(stamps.c.key == key)
                .order_by(stamps.c.at.desc())
                .limit(limit)
            )
        ).scalars()
        keep = sorted(float(at) for at in newest)
        await conn.execute(delete(stamps).where(stamps.c.key == key))
        if keep:
            await conn.execute(
                stamps.insert(), [{"key": key, "slot": i, "at": at} for i, at in enumerate(keep)]
            )
        await conn.execute(
            update(self._heads).where(self._heads.c.key == key).values(kept=len(keep))
        )
        return len(keep)

    async def count(self, conn: AsyncConnection, key: str, *, now: float, window: float) -> int:
        """How many kept requests fall in `(now - window, now]` (for status pages)."""
        stamps = self._stamps
        rows = await conn.execute(
            select(stamps.c.at).where(
                stamps.c.key == key, stamps.c.at > now - window, stamps.c.at <= now
            )
        )
        return len(rows.all())

    async def forget(self, conn: AsyncConnection, key: str) -> None:
        """Drop a key's record (its owner is gone)."""
        await conn.execute(delete(self._stamps).where(self._stamps.c.key == key))
        await conn.execute(delete(self._heads).where(self._heads.c.key == key))


Transaction = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
# A waiting take: key, now, limit, window and where its answer goes.
_Take = tuple[str, float, int, float, "asyncio.Future[Decision]"]


class BatchedSqlWindow:
    """A `SqlRequestWindow` whose concurrent takes share one write transaction (group commit).

    Why: a write transaction per request makes the database's writer lane (SQLite's one writer,
    a PostgreSQL row lock) the ceiling of a budgeted client's token rate: each one pays the
    lock, BEGIN, COMMIT and their trips to the driver. Takes that arrive while a transaction is
    running wait for the next one and all run in it, in key order (so two replicas' batches
    lock head rows in the same order and cannot deadlock), each with its own answer. A failed
    transaction fails every take in it (none was counted). A caller cancelled while waiting may
    still be counted: a budget may be spent on a token nobody received, never overspent.
    """

    def __init__(self, window: SqlRequestWindow, transaction: Transaction) -> None:
        self._window = window
        self._transaction = transaction
        self._pending: list[_Take] = []
        self._draining: asyncio.Task[None] | None = None

    async def take(self, key: str, *, now: float, limit: int, window: float) -> Decision:
        """Count one request at `now` if the window allows it (see the module's rule)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Decision] = loop.create_future()
        self._pending.append((key, now, limit, window, answer))
        draining = self._draining
        # A drain of another (closed) event loop never ends: start one on this loop.
        if draining is None or draining.done() or draining.get_loop() is not loop:
            self._draining = asyncio.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = sorted(self._pending, key=lambda take: (take[0], take[1]))
                self._pending = []
                try:
                    async with self._transaction() as conn:
                        answers: list[Decision] = []
                        for (key, limit, w), takes in itertools.groupby(
                            batch, key=lambda take: (take[0], take[2], take[3])
                        ):
                            nows = [take[1] for take in takes]
                            answers += await self._window.take_many(
                                conn, key, nows, limit=limit, window=w
                            )
                except Exception as exc:  # every caller hears of it; the loop goes on
                    _fail(batch, exc)
                    continue
                except BaseException:
                    # Cancelled (shutdown): no caller may wait for an answer that never comes.
                    _fail(batch + self._pending, RuntimeError("budget check cancelled"))
                    self._pending = []
                    raise
                for (*_, answer), decision in zip(batch, answers, strict=True):
                    if not answer.done():
                        answer.set_result(decision)
        finally:
            if self._draining is asyncio.current_task():
                self._draining = None


def _fail(takes: list[_Take], error: Exception) -> None:
    for *_, answer in takes:
        if not answer.done():
            answer.set_exception(error)


# Check and record in one step: Redis runs a script atomically, so two replicas can never both
# see "4 of 5 used" and both go. The sorted set keeps at most `limit` stamps (the most recent).
_TAKE_LUA = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local kept = redis.call('ZCARD', KEYS[1])
if kept > limit then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, kept - limit - 1)
  kept = limit
end
if kept >= limit then
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
  if oldest > now - window then
    return {0, tostring(oldest + window - now)}
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, 0)
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return {1, '0'}
"""


class RedisRequestWindow:
    """The counter in Redis, shared by every replica: a sorted set per key (the same keys and
    shape as the window it replaces, so an upgrade keeps the hour's requests). Key expiry is
    only garbage collection: a key untouched for a whole window holds nothing in it."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._take = redis.register_script(_TAKE_LUA)

    async def take(self, key: str, *, now: float, limit: int, window: float) -> Decision:
        """Count one request at `now` if the window allows it (see the module's rule)."""
        # A unique member, so two requests at the same instant are both counted.
        member = f"{now!r}:{uuid.uuid4().hex}"
        ok, wait = await self._take(keys=[key], args=[repr(now), window, limit, member])
        return bool(int(ok)), max(0.0, float(_text(wait)))

    async def count(self, key: str, *, now: float, window: float) -> int:
        """How many kept requests fall in `(now - window, now]` (for status pages)."""
        return int(await self._redis.zcount(key, f"({now - window!r}", repr(now)))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = [
    "BatchedSqlWindow",
    "Decision",
    "MemoryRequestWindow",
    "RedisRequestWindow",
    "SqlRequestWindow",
    "create_window_tables",
    "drop_window_tables",
    "window_tables",
]
