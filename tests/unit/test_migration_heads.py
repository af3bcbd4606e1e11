"""Start-up skips Alembic on an up-to-date database: the heads it reads from the revision
files' text are Alembic's own."""

from __future__ import annotations

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from mercato.app import load_modules
from mercato.platform.migrations import EVENTS_HISTORY, MigrationHistory, heads

HISTORIES = [EVENTS_HISTORY, *(m.migrations for m in load_modules() if m.migrations)]


@pytest.mark.parametrize("history", HISTORIES, ids=lambda h: h.version_table)
def test_heads_read_from_the_files_are_alembics(history: MigrationHistory) -> None:
    config = Config()
    config.set_main_option("script_location", str(history.path))
    assert heads(history) == frozenset(ScriptDirectory.from_config(config).get_heads())
