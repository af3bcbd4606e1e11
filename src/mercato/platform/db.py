"""One database per service: SQLite file by default, PostgreSQL (a schema per service) when set."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

from mercato.platform.sqlite_driver import one_trip_dbapi

_SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

# BIGINT autoincrement on PostgreSQL; SQLite only auto-increments a plain INTEGER primary key.
AutoIncrementId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Cents(TypeDecorator[Decimal]):
    """Money stored as whole cents in a BIGINT, exposed as a two-place Decimal.

    Integers keep sums exact on SQLite, which has no true decimal type.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int((Decimal(value) * 100).to_integral_value())

    def process_result_value(self, value: int | None, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(value) / 100).quantize(Decimal("0.01"))


class Database:
    """The engine of one service's database and the way to open transactions on it."""

    def __init__(self, service: str, url: str, *, echo: bool = False) -> None:
        if not _SAFE_NAME.match(service):
            raise ValueError(f"invalid service name {service!r}")
        self.service = service
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        # In-process writers queue here instead of spinning on SQLite's busy handler.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self.schema: str | None = None
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                _private_file(Path(parsed.database))
            # One trip to the connection's thread per statement (see `sqlite_driver`).
            self.engine: AsyncEngine = create_async_engine(
                url,
                echo=echo,
                pool_size=8,
                max_overflow=8,
                pool_timeout=60,
                module=one_trip_dbapi(),
            )
            _configure_sqlite(self.engine)
        else:
            self.schema = service
            self.engine = create_async_engine(
                url,
                echo=echo,
                pool_size=10,
                max_overflow=10,
                pool_pre_ping=True,
                connect_args={"server_settings": {"search_path": service}},
            )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction: committed on normal exit, rolled back on an exception."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        # The lock is taken before a connection (a writer waiting for it holds none) and
        # released as soon as the transaction has ended, before the connection goes back to the
        # pool: that reset is one more trip to the driver's thread, under load each trip waits a
        # turn of the event loop, and the lock is this database's only lane for writers.
        lock = self._write_lock
        await lock.acquire()
        try:
            conn = await self.engine.connect()
        except BaseException:
            lock.release()
            raise
        try:
            try:
                async with conn.begin():
                    yield conn
            finally:
                lock.release()
        finally:
            await conn.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction that never waits for writers."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(mercato_readonly=True)
            async with conn.begin():
                yield conn

    async def ensure_schema(self) -> None:
        """Create this service's PostgreSQL schema if it is missing (no-op on SQLite)."""
        if self.schema is None:
            return
        from sqlalchemy import text

        async with self.engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _private_file(path: Path) -> None:
    """Make a SQLite file (and its directory) readable by this user alone: they hold password
    hashes and sealed secrets. The file is created 0600 before SQLite opens it (SQLite gives
    its -wal and -shm files the database file's mode); a file or directory an older version
    left readable to others is tightened."""
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if _holds_only_ours(directory):
        directory.chmod(0o700)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for name in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        with contextlib.suppress(FileNotFoundError):
            name.chmod(0o600)


# What Mercato keeps in a data dir: databases (with SQLite's side files), the key-encryption key,
# the admin's credentials, the instance record, exports and backups.
_OUR_NAMES = re.compile(
    r"[\w.-]+\.db(-wal|-shm|-journal)?|secrets\.key|admin-credentials\.txt|instance\.json|exports"
)


def _holds_only_ours(directory: Path) -> bool:
    """Whether `directory` may be made private: ours (not a sticky /tmp, not someone else's),
    not a mount point, and holding nothing but Mercato's files. A database named somewhere
    else (`sqlite:////srv/x.db`, or `/x.db` as root) must never close its directory, let alone
    `/`, to every other user of the machine."""
    info = directory.stat()
    if info.st_uid != os.getuid() or info.st_mode & stat.S_ISVTX or os.path.ismount(directory):
        return False
    return all(_OUR_NAMES.fullmatch(entry.name) for entry in directory.iterdir())


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE below is ours to issue.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that upgrades later
        # fails at once with SQLITE_BUSY instead of waiting.
        readonly = conn.get_execution_options().get("mercato_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def dialect_insert(conn: AsyncConnection) -> Any:
    """The dialect's INSERT construct, the one with ON CONFLICT (PostgreSQL or SQLite)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"unsupported dialect {dialect}")  # pragma: no cover - only these two


_INSERT_IGNORE: dict[tuple[str, Table, tuple[str, ...]], Any] = {}


async def insert_ignore(
    conn: AsyncConnection,
    table: Table,
    rows: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    index_elements: Sequence[str],
) -> int:
    """Insert rows, skipping any that collide on `index_elements`; returns how many went in."""
    many = not isinstance(rows, Mapping)
    if many and not rows:
        return 0
    # Built once per dialect, table and key: a statement object keeps its cache key, so
    # SQLAlchemy finds the compiled form without walking a fresh construct on every call.
    key = (conn.dialect.name, table, tuple(index_elements))
    stmt = _INSERT_IGNORE.get(key)
    if stmt is None:
        stmt = dialect_insert(conn)(table).on_conflict_do_nothing(index_elements=index_elements)
        _INSERT_IGNORE[key] = stmt
    result = await conn.execute(stmt, list(rows) if many else rows)  # type: ignore[arg-type]
    return max(result.rowcount, 0)


def naming_metadata() -> MetaData:
    """A MetaData with a naming convention, so Alembic sees stable constraint names."""
    return MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
