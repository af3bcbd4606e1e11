"""Alembic, run from code: each history keeps its own version table in the service's database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from mercato.platform.db import Database

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


def _upgrade_sync(connection: Connection, history: MigrationHistory, schema: str | None) -> None:
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
