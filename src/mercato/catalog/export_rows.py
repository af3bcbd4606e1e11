"""The export's CSV lines, formatted by the database itself (DESIGN §5's columns).

A million products per export: each row leaves the cursor as its finished CSV line (price with
two places, Available/Unavailable, ISO 8601 UTC date, text cells quoted, formula cells
neutralised), so no product becomes Python objects on the way and nothing parses it again.
Measured on 1M products (CPU seconds, bench/export.py's data): the sqlite3 shell's CSV 1.3;
seven cells through the stdlib csv writer 5.4; a line built of SQL functions and `||` 4.3; one
printf per row 1.8. Hence one formatting call per row, compiled per dialect.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from mercato.catalog.contracts import EXPORT_CSV_HEADER, FORMULA_TRIGGERS
from mercato.catalog.store import keyset_page, products
from mercato.platform.db import UTCDateTime

__all__ = ["EXPORT_CSV_HEADER", "LINE_END", "csv_page", "export_line"]

# Text cells are always quoted: each test for "needs quotes" cost more than the quotes.
_SQLITE_LINE = '\'%s,"%s%w","%s%w",%d.%02d,%s,"%s%w",%.10sT%.8sZ\''
_POSTGRESQL_LINE = '\'%s,"%s%s","%s%s",%s.%s,%s,"%s%s",%s\''
_NO_MARK = "''"


class _CsvLine(FunctionElement[str]):
    """A product's CSV line, without its line end (one per dialect below)."""

    type = String()
    inherit_cache = True
    name = "csv_line"
    # Part of the statement's cache key: the two variants compile differently.
    _traverse_internals = [("neutralise", InternalTraversal.dp_boolean)]

    def __init__(self, *, neutralise: bool) -> None:
        super().__init__()
        self.neutralise = neutralise


def _columns(compiler: SQLCompiler, **kw: Any) -> dict[str, str]:
    return {name: compiler.process(column, **kw) for name, column in products.c.items()}


def _text_cells(element: _CsvLine, c: dict[str, str], mark: str, value: str) -> list[str]:
    """Each text column as two arguments: its formula mark ('' or `'`) and its value."""
    cells = []
    for name in ("name", "description", "owner_id"):
        cells.append(mark.format(c[name]) if element.neutralise else _NO_MARK)
        cells.append(value.format(c[name]))
    return cells


def _status(c: dict[str, str]) -> str:
    return f"CASE WHEN {c['active']} AND {c['stock']} > 0 THEN 'Available' ELSE 'Unavailable' END"


@compiles(_CsvLine)
def _csv_line_sqlite(element: _CsvLine, compiler: SQLCompiler, **kw: Any) -> str:
    # One printf per row: each further SQL function or `||` costs about as much as the whole
    # sqlite3 shell's row. `%w` doubles the quotes inside a quoted cell. SQLite keeps UTC
    # timestamps as `YYYY-MM-DD HH:MM:SS.ffffff` text (UTCDateTime), cut here into
    # `YYYY-MM-DDTHH:MM:SSZ`; prices are whole cents, never negative (a CHECK constraint).
    c = _columns(compiler, **kw)
    triggers = ",".join(str(ord(t)) for t in sorted(FORMULA_TRIGGERS))
    mark = f"CASE WHEN unicode({{}}) IN ({triggers}) THEN '''' ELSE '' END"
    cells = _text_cells(element, c, mark, "coalesce({}, '')")
    return (
        f"printf({_SQLITE_LINE}, {c['id']}, {', '.join(cells[:4])},"
        f" {c['price']} / 100, {c['price']} % 100, {_status(c)}, {', '.join(cells[4:])},"
        f" {c['created_at']}, substr({c['created_at']}, 12))"
    )


@compiles(_CsvLine, "postgresql")
def _csv_line_postgresql(element: _CsvLine, compiler: SQLCompiler, **kw: Any) -> str:
    c = _columns(compiler, **kw)
    triggers = ", ".join(f"chr({ord(t)})" for t in sorted(FORMULA_TRIGGERS))
    mark = f"CASE WHEN left({{}}, 1) IN ({triggers}) THEN '''' ELSE '' END"
    # format() writes a NULL as an empty string.
    cells = _text_cells(element, c, mark, "replace({}, '\"', '\"\"')")
    created = f"to_char({c['created_at']} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    return (
        f"format({_POSTGRESQL_LINE}, {c['id']}, {', '.join(cells[:4])},"
        f" {c['price']} / 100, lpad(({c['price']} % 100)::text, 2, '0'), {_status(c)},"
        f" {', '.join(cells[4:])}, {created})"
    )


def export_line(*, neutralise: bool) -> ColumnElement[str]:
    """A product's CSV line (without its line end), in `EXPORT_CSV_HEADER`'s columns: text
    cells quoted, price with two places, Available/Unavailable, ISO 8601 UTC date, and with
    `neutralise` a `'` before a text cell a spreadsheet would read as a formula."""
    return _CsvLine(neutralise=neutralise)


Keyset = tuple[datetime, str]
LINE_END = "\r\n"


def _at(when: datetime) -> ColumnElement[datetime]:
    return literal(when, UTCDateTime())


async def csv_page(
    conn: AsyncConnection, after: Keyset | None, limit: int, *, neutralise: bool
) -> tuple[str, Keyset | None]:
    """Up to `limit` export lines after `after` as one text, and where the next page starts
    (None: this was the last page).

    The page's last product is found first (a walk of the index), then the lines up to it are
    read: rows carry nothing but their line, and whatever the transaction's isolation, pages
    never overlap nor leave a gap.
    """
    c = products.c
    last = (
        await conn.execute(keyset_page(select(c.created_at, c.id), after, 1).offset(limit - 1))
    ).first()
    # select_from: the line's columns are inside a function, invisible to the FROM inference.
    lines_of = select(export_line(neutralise=neutralise)).select_from(products)
    query = keyset_page(lines_of, after, None)
    if last is not None:
        query = query.where(tuple_(c.created_at, c.id) <= tuple_(_at(last[0]), literal(last[1])))
    lines = (await conn.execute(query)).scalars().all()
    text = LINE_END.join(lines) + LINE_END if lines else ""
    return text, None if last is None else (last[0], last[1])
