"""aiosqlite under SQLAlchemy with one hand-off to the connection's thread per statement.

SQLAlchemy's aiosqlite adapter makes three or four trips to the connection's thread for every
statement (open a cursor, execute, fetch the rows, close the cursor), and under load each trip
back waits a turn of the event loop: on the event backbone's hot paths those trips cost more
than SQLite's own work. Here a statement runs, has its rows fetched and its cursor closed in a
single trip. Results are buffered exactly as the stock adapter buffers them (it fetches every
row at execute too), so nothing else changes: same SQLite connection and thread, same
transactions (BEGIN IMMEDIATE, commit, rollback are still one trip each), same errors.
Server-side cursors keep the stock behaviour (nothing here streams).
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

_Outcome = tuple[Any, list[Any] | None, int, int | None]


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """On the connection's thread: execute, fetch every row, close the cursor."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose execute is one trip to the connection's thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No aiosqlite cursor: opening one is a trip of its own.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._rows = collections.deque()
        self._soft_closed_memoized = EMPTY_DICT
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        """The columns of the last result (None for a statement without rows)."""
        return self._description

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed."""
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        """The rowid of the last inserted row."""
        return self._lastrowid  # type: ignore[return-value]

    def _trip(self, operation: Any, parameters: Any, many: bool) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        try:
            # aiosqlite's own queue to its thread (what each of its methods uses), untyped there.
            outcome = await_(
                connection._execute(  # type: ignore[no-untyped-call]
                    _run, connection._conn, operation, parameters, many
                )
            )
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows) if rows is not None else collections.deque()

    def execute(self, operation: Any, parameters: Any = None) -> None:
        """Run one statement and buffer its rows, in one trip."""
        self._trip(operation, () if parameters is None else parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> None:
        """Run one statement for each parameter set, in one trip."""
        self._trip(operation, seq_of_parameters, many=True)

    async def _async_soft_close(self) -> None:
        """Nothing to close: the cursor was closed on its thread."""

    def close(self) -> None:
        """Forget the buffered rows (the SQLite cursor is already closed)."""
        self._rows.clear()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """The stock adapted connection with one-trip cursors."""

    __slots__ = ()
    # A subclass of the stock cursor; mypy reads the base's attribute as invariant.
    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def rollback(self) -> None:
        """Roll back the open transaction; no trip when none is open.

        The pool rolls back every connection it takes back, after each transaction has already
        ended with its COMMIT or ROLLBACK: that was one more trip per transaction for nothing.
        SQLite's own flag says whether one is open (readable from any thread).
        """
        raw = self._connection._connection
        if raw is not None and not raw.in_transaction:
            return
        super().rollback()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """aiosqlite as SQLAlchemy's DBAPI module, connecting with one-trip cursors; passed to
    `create_async_engine(module=...)`, so URLs stay `sqlite+aiosqlite://`."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        """Open an aiosqlite connection (its thread a daemon, as the stock adapter does)."""
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True
        return OneTripConnection(self, await_(connection))


def one_trip_dbapi() -> OneTripDBAPI:
    """The DBAPI module to give SQLite engines."""
    return OneTripDBAPI(aiosqlite, sqlite3)
