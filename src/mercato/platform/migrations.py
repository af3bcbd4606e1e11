"""Alembic, run from code: each history keeps its own version table in the service's database.

Alembic is imported only when a history has something to apply: on an up-to-date database the
recorded revisions are compared with the heads read from the revision files' text (a start of
`mercato run` on an existing data dir then costs no Alembic import and no script loading, about
a third of a second).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, column, inspect, select, table

from mercato.platform.db import Database

_REVISION = re.compile(r"^revision(?:\s*:[^=]*)?\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:\s*:[^=]*)?\s*=\s*(.+)$", re.MULTILINE)
_QUOTED = re.compile(r"[\"']([^\"']+)[\"']")

EVENTS_HISTORY_PATH = Path(__file__).parent / "event_migrations"


@dataclass(frozen=True)
class MigrationHistory:
    """A folder of Alembic revisions and the version table that records how far it got."""

    path: Path
    version_table: str


EVENTS_HISTORY = MigrationHistory(EVENTS_HISTORY_PATH, "alembic_version_events")


def run_env() -> None:
    """Body of every history's `env.py`: migrate on the connection handed in by `upgrade`."""
    from alembic import context

    connection: Connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        version_table=context.config.attributes["version_table"],
        version_table_schema=context.config.attributes.get("schema"),
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


@cache
def heads(history: MigrationHistory) -> frozenset[str] | None:
    """The revisions no other revision follows, read from the files' text (None when a file
    does not say plainly: then Alembic decides)."""
    revisions: set[str] = set()
    followed: set[str] = set()
    for path in sorted((history.path / "versions").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        followed.update(_QUOTED.findall(down.group(1)))  # None, one, or a merge's tuple
    found = frozenset(revisions - followed)
    return found or None


def up_to_date(connection: Connection, history: MigrationHistory, schema: str | None) -> bool:
    """Whether the database records exactly the history's heads (nothing to apply)."""
    expected = heads(history)
    if expected is None or not inspect(connection).has_table(history.version_table, schema=schema):
        return False
    versions = table(history.version_table, column("version_num"), schema=schema)
    recorded = {str(v) for (v,) in connection.execute(select(versions.c.version_num))}
    return recorded == expected


def _upgrade_sync(connection: Connection, history: MigrationHistory, schema: str | None) -> None:
    if up_to_date(connection, history, schema):
        return
    from alembic import command  # only now: a pending migration
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(history.path))
    attributes: dict[str, Any] = config.attributes
    attributes["connection"] = connection
    attributes["version_table"] = history.version_table
    attributes["schema"] = schema
    command.upgrade(config, "head")


async def upgrade(database: Database, histories: list[MigrationHistory]) -> None:
    """Apply the platform's event tables, then each given history, to head."""
    await database.ensure_schema()
    for history in [EVENTS_HISTORY, *histories]:
        async with database.engine.begin() as conn:
            await conn.run_sync(_upgrade_sync, history, database.schema)
