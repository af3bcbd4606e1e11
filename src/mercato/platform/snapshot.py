"""Snapshots of one service's database: SQLite's online backup, `pg_dump` of its schema.

Both read a consistent state while the platform keeps writing (SQLite's backup API copies the
file under one read transaction in WAL mode; `pg_dump` runs in one repeatable-read snapshot).
Services' databases are snapshotted one after another, so two of them may disagree about an
event in flight; `replay_recent` settles that after a restore (see `mercato.backup`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.engine import make_url

from mercato.platform.db import Database
from mercato.platform.events.tables import outbox


class SnapshotError(RuntimeError):
    """A snapshot could not be taken or restored (the message is one line)."""


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None for another database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise SnapshotError(f"{url} is not a file")
    return Path(parsed.database)


def sqlite_backup(source: Path, target: Path) -> None:
    """Copy a live SQLite database to `target` (0600) in one step of the online backup API."""
    if not source.exists():
        raise SnapshotError(f"{source} does not exist: has the platform ever started here?")
    private_create(target)
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=-1)  # one step: one read transaction, a consistent copy
            # The copy stands alone in one file (no -wal beside it to lose on the way).
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def private_create(path: Path) -> None:
    """Create `path` empty and readable by this user alone (snapshots hold password hashes)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))


def sha256_of(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sqlite_heads(path: Path, version_tables: Sequence[str]) -> dict[str, list[str]]:
    """The Alembic revisions recorded in each of `version_tables` of a SQLite file."""
    conn = sqlite3.connect(path)
    try:
        heads: dict[str, list[str]] = {}
        for table in version_tables:
            try:
                rows = conn.execute(f'SELECT version_num FROM "{table}"').fetchall()  # noqa: S608 - our own table names
            except sqlite3.OperationalError:
                rows = []
            heads[table] = sorted(row[0] for row in rows)
        return heads
    finally:
        conn.close()


async def replay_recent(database: Database, since: datetime) -> int:
    """Mark the events the service sent since `since` unsent again, so its relay sends them
    once more (consumers' inboxes drop what they already applied). Answers how many."""
    async with database.transaction() as conn:
        result = await conn.execute(
            update(outbox).where(outbox.c.sent_at >= since).values(sent_at=None)
        )
    return max(result.rowcount, 0)


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as `pg_dump` and `psql` take it (no driver suffix)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def pg_dump(url: str, schemas: Sequence[str], target: Path) -> None:
    """Dump `schemas` of one PostgreSQL database to `target` in one snapshot (custom format)."""
    tool = shutil.which("pg_dump")
    if tool is None:
        raise SnapshotError("pg_dump is not installed (PostgreSQL's client tools)")
    private_create(target)
    arguments = [tool, "--format=custom", "--no-owner", "--no-privileges", f"--file={target}"]
    arguments += [f"--schema={schema}" for schema in schemas]
    _run([*arguments, f"--dbname={libpq_url(url)}"], "pg_dump")


def pg_restore(url: str, source: Path) -> None:
    """Restore a `pg_dump` file into the database at `url` (its schemas must not exist)."""
    tool = shutil.which("pg_restore")
    if tool is None:
        raise SnapshotError("pg_restore is not installed (PostgreSQL's client tools)")
    arguments = [tool, "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
    _run([*arguments, f"--dbname={libpq_url(url)}", str(source)], "pg_restore")


def _run(arguments: list[str], name: str) -> None:
    done = subprocess.run(arguments, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())[:300]
        raise SnapshotError(f"{name} failed: {said}")
